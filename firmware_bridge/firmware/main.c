/* edgesort gate controller for the ATmega328P at 16 MHz (Arduino Uno/Nano). Protocol: ../PROTOCOL.md.
 *
 *   PD0/PD1  UART 250000 8N1 by default (U2X, UBRR 7: exact at 16 MHz; `make BAUD=115200` for slow
 *            adapters), interrupt-driven RX and TX rings
 *   PD2      encoder, INT0 on the rising edge: count++, fires due ejections inside the interrupt
 *   PD4..PD7 gates 0..3, PB0..PB3 gates 4..7 (high = energised; pins float low after any reset, and the
 *            gate drivers' pull-downs then keep every gate de-energised: the default bin)
 *   Timer0   1 kHz tick: pulse timers, host-silence timer, encoder stream period
 *   Timer1   free-running at 2 MHz: the microsecond clock reported with counts and fires
 *   Watchdog 250 ms, reset by the main loop
 */
#ifndef F_CPU
#define F_CPU 16000000UL
#endif
#include <avr/interrupt.h>
#include <avr/io.h>
#include <avr/sleep.h>
#include <avr/wdt.h>
#include <stdint.h>
#include <util/atomic.h>

#include "protocol.h"

#define FW_VERSION 0x0100
#ifndef BAUD
#define BAUD 250000UL
#endif
/* U2X: baud = F_CPU / 8 / (UBRR + 1). 250000 is exact at 16 MHz (UBRR 7) and cuts a QUEUE_EJECT round trip from
 * about 3 ms at 115200 (UBRR 16, 117647 baud, +2.1 %: the usual Arduino setting) to 1.4 ms: the wire was a third
 * of the 10 ms the sorter has between inference and the MCU's acknowledgement. 500000 (UBRR 3) is exact too, but
 * there this firmware falls behind the link's bursts (eight QUEUE_EJECTs in flight: 20-42 of 800 lost bytes to a
 * full receive ring and were sent again, in simavr), while at 250000 none did. See ISR(INT0_vect) for the
 * interrupt latency. */
#define UBRR_U2X ((F_CPU + 4UL * BAUD) / (8UL * BAUD) - 1UL) /* rounded to the nearest */
#define BAUD_ACTUAL (F_CPU / 8UL / (UBRR_U2X + 1UL))
#if BAUD_ACTUAL * 100UL > BAUD * 103UL || BAUD_ACTUAL * 100UL < BAUD * 97UL
#error "BAUD is more than 3 % off at this F_CPU with U2X"
#endif
#define QUEUE_CAP 32
#define GATE_COUNT 8
#define FAILSAFE_MS 500
#define MAX_PULSE_MS 2000
#define HISTORY 16
#define FIRED_CAP 16
#define RX_RING 128
#define TX_RING 128
#define DEFAULT_STREAM_MS 10

#define SAT16(x) ((x) > 0xFFFF ? 0xFFFF : (uint16_t)(x))

/* ---- reset cause: MCUSR must be read and cleared, and the watchdog stopped, before main() (.init3) ----- */
uint8_t mcusr_at_boot __attribute__((section(".noinit")));
void read_reset_cause(void) __attribute__((naked, used, section(".init3")));
void read_reset_cause(void) {
    mcusr_at_boot = MCUSR;
    MCUSR = 0;
    wdt_disable();
}

/* ---- state shared with interrupts ------------------------------------------------------------------ */
static volatile uint8_t rx_buf[RX_RING], tx_buf[TX_RING];
static volatile uint8_t rx_head, rx_tail, tx_head, tx_tail;
static volatile uint16_t uart_overruns;

static volatile uint32_t enc_count;
static volatile uint32_t us_hi;        /* microseconds at the last Timer1 overflow */
static volatile uint16_t ms16;         /* 1 kHz tick */
static volatile uint16_t silence_ms;   /* since the last valid host frame */
static volatile uint16_t gate_ms[GATE_COUNT];

static volatile uint8_t q_n;
static uint32_t q_item[QUEUE_CAP], q_target[QUEUE_CAP];
static uint16_t q_pulse[QUEUE_CAP];
static uint8_t q_gate[QUEUE_CAP];
static volatile uint32_t next_target;

typedef struct {
    uint32_t item, target, actual, us;
    uint8_t gate;
} fired_t;
static fired_t fired[FIRED_CAP];
static volatile uint8_t fired_head, fired_tail;

/* ---- main-loop state ------------------------------------------------------------------------------- */
static rx_decoder_t dec;
static uint8_t state = STATE_UNLINKED;
static uint16_t tx_seq;
static uint16_t last_host_seq;
static uint8_t have_last_seq;
static uint16_t stream_ms = DEFAULT_STREAM_MS;
static uint8_t reset_cause;
static struct {
    uint32_t tx_frames, fired;
    uint16_t seq_gaps, duplicates, late, full, failsafes, fired_lost, tx_dropped;
} st;
typedef struct {
    uint16_t seq;
    uint8_t type, result, extra;
} hist_t;
static hist_t hist[HISTORY];
static uint8_t hist_n, hist_next;

/* ---- gates ----------------------------------------------------------------------------------------- */
static inline void gate_write(uint8_t g, uint8_t on) {
    if (g < 4) {
        if (on) PORTD |= (uint8_t)(1 << (4 + g));
        else PORTD &= (uint8_t)~(1 << (4 + g));
    } else {
        if (on) PORTB |= (uint8_t)(1 << (g - 4));
        else PORTB &= (uint8_t)~(1 << (g - 4));
    }
}

static uint8_t gates_mask(void) { return (uint8_t)((PORTD >> 4) | ((PORTB & 0x0F) << 4)); }

static void all_gates_off(void) {
    ATOMIC_BLOCK(ATOMIC_RESTORESTATE) {
        for (uint8_t g = 0; g < GATE_COUNT; g++) gate_ms[g] = 0;
        PORTD &= 0x0F;
        PORTB &= 0xF0;
    }
}

/* energise for at least pulse ms (the 1 kHz tick ends it within one more ms); a running pulse is extended */
static inline void gate_pulse(uint8_t g, uint16_t pulse) {
    ATOMIC_BLOCK(ATOMIC_RESTORESTATE) { /* the 1 kHz tick counts gate_ms down and ends pulses */
        gate_write(g, 1);
        if (gate_ms[g] < pulse + 1) gate_ms[g] = pulse + 1;
    }
}

/* ---- clocks ---------------------------------------------------------------------------------------- */
static uint32_t micros(void) {
    uint32_t hi;
    uint16_t t;
    ATOMIC_BLOCK(ATOMIC_RESTORESTATE) {
        t = TCNT1;
        hi = us_hi;
        if ((TIFR1 & (1 << TOV1)) && t < 0x8000) hi += 32768; /* overflow pending, not yet serviced */
    }
    return hi + (t >> 1);
}

static uint32_t count_now(void) {
    uint32_t c;
    ATOMIC_BLOCK(ATOMIC_RESTORESTATE) { c = enc_count; }
    return c;
}

ISR(TIMER1_OVF_vect) { us_hi += 32768; }

ISR(TIMER0_COMPA_vect) {
    ms16++;
    if (silence_ms != 0xFFFF) silence_ms++;
    for (uint8_t g = 0; g < GATE_COUNT; g++)
        if (gate_ms[g] && --gate_ms[g] == 0) gate_write(g, 0);
}

/* ---- queue (callers hold interrupts off) ------------------------------------------------------------ */
static void recompute_next(uint32_t c) {
    int32_t best = INT32_MAX;
    for (uint8_t i = 0; i < q_n; i++) {
        int32_t d = (int32_t)(q_target[i] - c);
        if (d < best) best = d;
    }
    next_target = c + (uint32_t)best;
}

static void queue_remove(uint8_t i) {
    uint8_t last = q_n - 1;
    q_item[i] = q_item[last];
    q_target[i] = q_target[last];
    q_pulse[i] = q_pulse[last];
    q_gate[i] = q_gate[last];
    q_n = last;
}

static void fire_due(uint32_t c) {
    uint32_t now_us = micros();
    for (int8_t i = (int8_t)q_n - 1; i >= 0; i--) {
        if ((int32_t)(c - q_target[i]) < 0) continue;
        gate_pulse(q_gate[i], q_pulse[i]);
        uint8_t next = (fired_head + 1) % FIRED_CAP;
        if (next != fired_tail) {
            fired_t *f = &fired[fired_head];
            f->item = q_item[i];
            f->gate = q_gate[i];
            f->target = q_target[i];
            f->actual = c;
            f->us = now_us;
            fired_head = next;
        } else {
            st.fired_lost++; /* the gate fired; only its report is lost */
        }
        st.fired++;
        queue_remove((uint8_t)i);
    }
    recompute_next(c);
}

static volatile uint8_t firing; /* the encoder interrupt is inside fire_due, with interrupts let in */

ISR(INT0_vect) {
    uint32_t c = ++enc_count;
    if (firing || !q_n || (int32_t)(c - next_target) < 0) return;
    /* Firing scans the queue twice, about 60 cycles per queued ejection: some 2000 cycles with 32 queued. At
     * 250000 baud the UART's buffer (two bytes, and the one shifting in) lasts 120 us, 1920 cycles, so the other
     * interrupts are let in meanwhile, this one included: an edge that comes while firing only counts (the
     * `firing` guard), and the loop then fires what that count made due. Masking INT0 instead would keep one
     * edge in its flag and lose a second; simavr also drops the one in the flag. The UART and timer interrupts
     * touch none of the queue's state, and gate_pulse shares the gates with the 1 kHz tick atomically. */
    firing = 1;
    for (;;) {
        sei();
        fire_due(c);
        cli();
        if (c == enc_count) break;
        c = enc_count;
        if (!q_n || (int32_t)(c - next_target) < 0) break;
    }
    firing = 0;
}

/* ---- UART ------------------------------------------------------------------------------------------ */
/* Drains every byte the UART holds. The last UCSR0A read, which finds RXC0 clear, is also what tells
 * simavr's UART model that its input is empty (its XON); without it the harness would stop feeding bytes
 * once that model's 64-byte input FIFO had filled. */
ISR(USART_RX_vect) {
    uint8_t status;
    while ((status = UCSR0A) & (1 << RXC0)) {
        uint8_t b = UDR0;
        if (status & (1 << DOR0)) uart_overruns++;
        uint8_t next = (uint8_t)((rx_head + 1) % RX_RING);
        if (next == rx_tail) {
            uart_overruns++;
            continue;
        }
        rx_buf[rx_head] = b;
        rx_head = next;
    }
}

ISR(USART_UDRE_vect) {
    if (tx_head == tx_tail) {
        UCSR0B &= (uint8_t)~(1 << UDRIE0);
        return;
    }
    UDR0 = tx_buf[tx_tail];
    tx_tail = (uint8_t)((tx_tail + 1) % TX_RING);
}

static uint8_t tx_free(void) { return (uint8_t)((tx_tail - tx_head - 1) % TX_RING); }

/* essential frames (replies, FIRED, FAILSAFE, BOOT) wait for room; the encoder stream is dropped instead */
static void uart_send(const uint8_t *b, uint8_t n, uint8_t essential) {
    if (!essential && tx_free() < n) {
        st.tx_dropped++;
        return;
    }
    for (uint8_t i = 0; i < n; i++) {
        while (tx_free() == 0) wdt_reset(); /* at most one ring (5 ms at 250000 baud, 11 at 115200) */
        tx_buf[tx_head] = b[i];
        tx_head = (uint8_t)((tx_head + 1) % TX_RING);
        ATOMIC_BLOCK(ATOMIC_RESTORESTATE) { UCSR0B |= (1 << UDRIE0); }
    }
}

static void send_msg(uint8_t type, const uint32_t *fields, uint8_t essential) {
    uint8_t payload[PROTO_MAX_PAYLOAD], wire[PROTO_MAX_ENCODED + 1];
    int n = msg_pack(type, fields, payload);
    uint8_t len = (uint8_t)frame_encode(type, tx_seq, payload, (uint8_t)n, wire);
    if (!essential && tx_free() < len) {
        st.tx_dropped++;
        return; /* keep tx_seq: a dropped stream sample is no sequence gap */
    }
    tx_seq++;
    st.tx_frames++;
    uart_send(wire, len, essential);
}

/* ---- commands -------------------------------------------------------------------------------------- */
static uint8_t queue_eject(const uint32_t *a) {
    uint32_t item = a[0], target = a[2];
    uint8_t gate = (uint8_t)a[1];
    uint16_t pulse = (uint16_t)a[3];
    if (gate >= GATE_COUNT || pulse < 1 || pulse > MAX_PULSE_MS) return RES_BAD_ARG;
    uint8_t res = RES_OK;
    ATOMIC_BLOCK(ATOMIC_RESTORESTATE) {
        uint32_t c = enc_count;
        int32_t d = (int32_t)(target - c);
        if (d <= 0) {
            st.late++;
            res = RES_LATE;
        } else {
            uint8_t dup = 0;
            for (uint8_t i = 0; i < q_n; i++)
                if (q_item[i] == item) dup = 1;
            if (dup) {
                st.duplicates++;
            } else if (q_n >= QUEUE_CAP) {
                st.full++;
                res = RES_FULL;
            } else {
                uint8_t i = q_n;
                q_item[i] = item;
                q_target[i] = target;
                q_pulse[i] = pulse;
                q_gate[i] = gate;
                q_n = i + 1;
                recompute_next(c);
            }
        }
    }
    return res;
}

static uint8_t flush_queue(void) {
    uint8_t n;
    ATOMIC_BLOCK(ATOMIC_RESTORESTATE) {
        n = q_n;
        q_n = 0;
    }
    return n;
}

static void answer(const frame_t *f, uint8_t result, uint8_t extra) {
    uint32_t r[4] = {f->seq, result, 0, 0};
    if (f->type == MSG_QUEUE_EJECT) {
        r[2] = q_n;
        r[3] = count_now();
    } else if (f->type == MSG_SAFE) {
        r[2] = extra;
    }
    send_msg(f->type | MSG_REPLY, r, 1);
}

static void record(const frame_t *f, uint8_t result, uint8_t extra) {
    hist_t *h = &hist[hist_next];
    h->seq = f->seq;
    h->type = f->type;
    h->result = result;
    h->extra = extra;
    hist_next = (uint8_t)((hist_next + 1) % HISTORY);
    if (hist_n < HISTORY) hist_n++;
    answer(f, result, extra);
}

static void nak(const frame_t *f, uint8_t result) {
    uint32_t r[3] = {f->seq, result, f->type};
    send_msg(MSG_NAK, r, 1);
}

static void handle(frame_t *f) {
    uint32_t a[PROTO_MAX_FIELDS];
    ATOMIC_BLOCK(ATOMIC_RESTORESTATE) { silence_ms = 0; }
    if (f->type & MSG_REPLY || !msg_layout(f->type)) {
        nak(f, RES_UNKNOWN_TYPE);
        return;
    }
    if (msg_unpack(f->type, f->payload, f->len, a) < 0) {
        nak(f, RES_BAD_LENGTH);
        return;
    }
    uint8_t world = f->type == MSG_QUEUE_EJECT || f->type == MSG_CANCEL || f->type == MSG_SAFE ||
                    f->type == MSG_TEST_PULSE || f->type == MSG_CONFIGURE;
    if (world)
        for (uint8_t i = 0; i < hist_n; i++)
            if (hist[i].seq == f->seq && hist[i].type == f->type) {
                st.duplicates++;
                answer(f, hist[i].result, hist[i].extra); /* a retry: same answer, not executed again */
                return;
            }
    if (f->type != MSG_HELLO && have_last_seq && f->seq != last_host_seq && f->seq != (uint16_t)(last_host_seq + 1))
        st.seq_gaps++;
    last_host_seq = f->seq;
    have_last_seq = 1;

    switch (f->type) {
    case MSG_HELLO: {
        flush_queue();
        all_gates_off();
        hist_n = 0;
        state = STATE_LINKED;
        uint32_t r[8] = {f->seq, PROTO_VERSION, FW_VERSION, QUEUE_CAP, GATE_COUNT, reset_cause, micros(),
                         count_now()};
        send_msg(MSG_HELLO | MSG_REPLY, r, 1);
        return;
    }
    case MSG_HEARTBEAT: {
        uint32_t r[5] = {f->seq, state, q_n, micros(), count_now()};
        send_msg(MSG_HEARTBEAT | MSG_REPLY, r, 1);
        return;
    }
    case MSG_STATUS: {
        uint32_t r[18] = {f->seq, state, q_n, micros(), count_now(), gates_mask(), reset_cause,
                          dec.frames, st.tx_frames, dec.crc_errors,
                          SAT16((uint32_t)dec.cobs_errors + dec.short_frames + dec.version_errors),
                          SAT16((uint32_t)dec.overruns + uart_overruns), st.seq_gaps, st.duplicates,
                          st.fired, st.late, st.full, st.failsafes};
        send_msg(MSG_STATUS | MSG_REPLY, r, 1);
        return;
    }
    case MSG_SAFE: {
        uint8_t n = flush_queue();
        all_gates_off();
        record(f, RES_OK, n);
        return;
    }
    default: break;
    }
    if (state != STATE_LINKED) {
        answer(f, RES_NOT_LINKED, 0); /* not recorded: resent under a new sequence after HELLO */
        return;
    }
    uint8_t res = RES_OK;
    switch (f->type) {
    case MSG_QUEUE_EJECT: res = queue_eject(a); break;
    case MSG_CANCEL:
        res = RES_NOT_FOUND;
        ATOMIC_BLOCK(ATOMIC_RESTORESTATE) {
            for (int8_t i = (int8_t)q_n - 1; i >= 0; i--)
                if (q_item[i] == a[0]) {
                    queue_remove((uint8_t)i);
                    res = RES_OK;
                }
            recompute_next(enc_count);
        }
        break;
    case MSG_TEST_PULSE:
        if (a[0] >= GATE_COUNT || a[1] < 1 || a[1] > MAX_PULSE_MS) res = RES_BAD_ARG;
        else ATOMIC_BLOCK(ATOMIC_RESTORESTATE) { gate_pulse((uint8_t)a[0], (uint16_t)a[1]); }
        break;
    case MSG_CONFIGURE:
        if (a[0] > 1000) res = RES_BAD_ARG;
        else stream_ms = (uint16_t)a[0];
        break;
    default: break;
    }
    record(f, res, 0);
}

/* ---- main ------------------------------------------------------------------------------------------ */
static void hw_init(void) {
    DDRD |= 0xF0; /* gates 0..3 */
    DDRB |= 0x0F; /* gates 4..7 */
    PORTD &= 0x0F;
    PORTB &= 0xF0;

    UCSR0A = (1 << U2X0); /* before UBRR0: simavr derives its byte time when UBRR0L is written */
    UBRR0 = UBRR_U2X;
    UCSR0C = (1 << UCSZ01) | (1 << UCSZ00); /* 8N1 */
    UCSR0B = (1 << RXEN0) | (1 << TXEN0) | (1 << RXCIE0);

    EICRA = (1 << ISC01) | (1 << ISC00); /* INT0 on the rising edge */
    EIMSK = (1 << INT0);

    TCCR0A = (1 << WGM01); /* CTC */
    OCR0A = 249;           /* 16 MHz / 64 / 250 = 1 kHz */
    TCCR0B = (1 << CS01) | (1 << CS00);
    TIMSK0 = (1 << OCIE0A);

    TCCR1A = 0;
    TCCR1B = (1 << CS11); /* 16 MHz / 8 = 2 MHz */
    TIMSK1 = (1 << TOIE1);
}

int main(void) {
    reset_cause = mcusr_at_boot & 0x0F;
    hw_init();
    rx_init(&dec);
    set_sleep_mode(SLEEP_MODE_IDLE);
    wdt_enable(WDTO_250MS);
    sei();
    {
        uint8_t z = 0;
        uart_send(&z, 1, 1); /* ends whatever partial frame the host holds */
        uint32_t b[3] = {reset_cause, FW_VERSION, PROTO_VERSION};
        send_msg(MSG_BOOT, b, 1);
    }
    uint16_t last_stream = ms16;
    frame_t f;
    for (;;) {
        wdt_reset();
        while (rx_tail != rx_head) {
            uint8_t b = rx_buf[rx_tail];
            rx_tail = (uint8_t)((rx_tail + 1) % RX_RING);
            if (rx_feed(&dec, b, &f)) handle(&f);
        }
        while (fired_tail != fired_head) {
            fired_t *e = &fired[fired_tail];
            uint32_t r[5] = {e->item, e->gate, e->target, e->actual, e->us};
            fired_tail = (uint8_t)((fired_tail + 1) % FIRED_CAP);
            send_msg(MSG_FIRED, r, 1);
        }
        uint16_t silent, now;
        ATOMIC_BLOCK(ATOMIC_RESTORESTATE) {
            silent = silence_ms;
            now = ms16;
        }
        if (state == STATE_LINKED && silent >= FAILSAFE_MS) {
            uint32_t r[2] = {1 /* host silent */, flush_queue()};
            all_gates_off();
            state = STATE_FAILSAFE;
            st.failsafes++;
            send_msg(MSG_FAILSAFE, r, 1);
        }
        if (stream_ms && (uint16_t)(now - last_stream) >= stream_ms) {
            last_stream = now;
            uint32_t r[2] = {micros(), count_now()};
            send_msg(MSG_ENCODER, r, 0);
        }
        cli();
        if (rx_tail == rx_head && fired_tail == fired_head) {
            sleep_enable();
            sei(); /* the instruction after sei runs before any interrupt: no wake-up is lost */
            sleep_cpu();
            sleep_disable();
        }
        sei();
    }
}
