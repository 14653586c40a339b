/* Runs the gate firmware ELF on libsimavr in real time, for the hardware-in-the-loop tests and the demo.
 *
 *   harness FIRMWARE.elf [--count-file PATH] [--speed TICKS_PER_S]
 *
 * - The firmware's UART0 is bridged to a fresh pty, printed as "PTY <path>": pyserial opens it like a
 *   USB-serial adapter. simavr times each byte on its simulated UART (44 us at the default 250000 baud,
 *   93.5 us at 115200).
 * - The encoder: the harness drives PD2 (INT0) with a square wave of the requested speed; the count of rising
 *   edges is "the belt position". It is written to --count-file, a memory-mapped file the host reads at any
 *   time without asking: u64 count, u64 cycle, u64 the CLOCK_MONOTONIC ns at which the pacing below had that
 *   cycle due (0 before it starts), u64 a sequence number, odd while the three are being written (a seqlock).
 *   When the harness runs late, the published count is the world as it was at that due time, not now: the
 *   twin's camera stamps its frame with it, as a real camera stamps the moment its picture shows.
 * - Every change of a gate pin (PD4..PD7 = gates 0..3, PB0..PB3 = gates 4..7) prints
 *   "G <cycle> <gate> <0|1> <count>" on stdout, with the count of encoder edges at that cycle.
 * - stdin takes one command per line: "speed <ticks/s>", "reset" (the MCU's reset pin), "quit", and
 *   "pause <seconds>" (fault injection: the harness stops for that long, as when the OS does not run it; the
 *   pacing below then pauses the simulated world, so the MCU's clock lags the host's by that much more).
 * - Other stdout lines: "PTY <path>", "READY", "R <cycle> <count>" after a reset, "STATS ..." at the end.
 *   simavr's own chatter goes to stderr.
 *
 * The pty bridge is written here rather than taken from simavr's parts/uart_pty: in libsimavrparts 1.6 that
 * part feeds the UART from its own thread without a lock while the core runs in another (upstream added a
 * mutex later), and this harness has to stay exact under 1000-ejection runs. Here everything runs in one
 * thread: the core runs up to the wall clock, then the pty, stdin and the pacing are served, and the loop
 * sleeps in select() until the host writes or simulated time is due again.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pty.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/select.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <simavr/avr_ioport.h>
#include <simavr/avr_uart.h>
#include <simavr/sim_avr.h>
#include <simavr/sim_elf.h>
#include <simavr/sim_irq.h>
#include <simavr/sim_cycle_timers.h>

#define FREQ 16000000u
#define MCUSR_ADDR 0x54 /* MCUSR: I/O 0x34, data space 0x54 */
#define UCSR0B_ADDR 0xC1
#define RXEN0_BIT 0x10
#define GATES 8
#define PACE_SLICE_US 200 /* the core runs at most this far ahead of the wall clock */
#define MAX_CATCH_UP (FREQ / 50) /* 20 ms: a longer lag pauses the simulated world instead */
#define CATCH_UP_RATE 1.1        /* a shorter one is caught up at most this much faster than real time */

static avr_t *avr;
static FILE *events;
static int pty_master = -1, pty_slave = -1;
static avr_irq_t *uart_in, *enc_pin;
static int xon = 1;
static uint8_t to_avr[1 << 16], to_host[1 << 16];
static size_t to_avr_r, to_avr_w, to_host_n;
static uint64_t host_bytes_dropped;

static volatile uint64_t *shared; /* [0] count, [1] cycle, [2] due ns, [3] seqlock */
static double pace_t0;           /* CLOCK_MONOTONIC s at which cycle pace_cycle0 was due (0: not pacing yet) */
static uint64_t pace_cycle0;
static uint64_t enc_count;
static double speed;
static double enc_next;
static int enc_level;
static int gate_level[GATES];
static uint64_t max_lag_cycles, paused_cycles, pauses;
static int enc_armed;
static uint64_t cycle_offset, last_cycle; /* some simavr versions zero avr->cycle in avr_reset */
static void (*core_reset)(avr_t *);

static uint64_t sim_cycles(void) {
    if (avr->cycle < last_cycle)
        cycle_offset += last_cycle - avr->cycle;
    last_cycle = avr->cycle;
    return avr->cycle + cycle_offset;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void publish(void) {
    if (shared) {
        uint64_t cycle = sim_cycles();
        shared[3]++; /* odd: a reader retries */
        __sync_synchronize();
        shared[1] = cycle;
        shared[0] = enc_count;
        shared[2] = pace_t0 > 0 ? (uint64_t)((pace_t0 + (double)(cycle - pace_cycle0) / FREQ) * 1e9) : 0;
        __sync_synchronize();
        shared[3]++;
    }
}

/* ---- encoder ---------------------------------------------------------------------------------------- */
static avr_cycle_count_t enc_edge(avr_t *a, avr_cycle_count_t when, void *param) {
    (void)param;
    (void)when;
    if (speed <= 0) {
        enc_level = 0;
        avr_raise_irq(enc_pin, 0);
        enc_armed = 0;
        return 0;
    }
    enc_level ^= 1;
    if (enc_level) {
        enc_count++;
        publish();
    }
    avr_raise_irq(enc_pin, (uint32_t)enc_level);
    enc_next += (double)FREQ / speed / 2.0;
    if (enc_next <= (double)a->cycle)
        enc_next = (double)a->cycle + 1;
    return (avr_cycle_count_t)enc_next;
}

static void enc_schedule(void) {
    if (speed > 0 && !enc_armed) {
        avr_cycle_count_t half = (avr_cycle_count_t)((double)FREQ / speed / 2.0) + 1;
        enc_next = (double)(avr->cycle + half);
        avr_cycle_timer_register(avr, half, enc_edge, NULL);
        enc_armed = 1;
    }
}

/* ---- gates ------------------------------------------------------------------------------------------ */
static void gate_hook(struct avr_irq_t *irq, uint32_t value, void *param) {
    (void)irq;
    int g = (int)(intptr_t)param;
    int v = value ? 1 : 0;
    if (v == gate_level[g])
        return;
    gate_level[g] = v;
    fprintf(events, "G %llu %d %d %llu\n", (unsigned long long)sim_cycles(), g, v, (unsigned long long)enc_count);
}

static void gates_released(void) {
    /* after a reset every pin is an input; the drivers' pull-downs de-energise the gates */
    for (int g = 0; g < GATES; g++)
        if (gate_level[g]) {
            gate_level[g] = 0;
            fprintf(events, "G %llu %d 0 %llu\n", (unsigned long long)sim_cycles(), g,
                    (unsigned long long)enc_count);
        }
}

/* ---- UART <-> pty ----------------------------------------------------------------------------------- */
static void uart_out_hook(struct avr_irq_t *irq, uint32_t value, void *param) {
    (void)irq;
    (void)param;
    if (to_host_n < sizeof to_host)
        to_host[to_host_n++] = (uint8_t)value;
    else
        host_bytes_dropped++; /* nobody reads the pty: a UART's TX is never held back either */
}

static void xon_hook(struct avr_irq_t *irq, uint32_t value, void *param) {
    (void)irq;
    (void)value;
    (void)param;
    xon = 1;
}

static void xoff_hook(struct avr_irq_t *irq, uint32_t value, void *param) {
    (void)irq;
    (void)param;
    if (value)
        xon = 0;
}

static void open_pty(void) {
    char name[256];
    struct termios tio;
    if (openpty(&pty_master, &pty_slave, name, NULL, NULL) < 0) {
        perror("openpty");
        exit(1);
    }
    tcgetattr(pty_slave, &tio);
    cfmakeraw(&tio);
    tcsetattr(pty_slave, TCSANOW, &tio);
    tcgetattr(pty_master, &tio);
    cfmakeraw(&tio);
    tcsetattr(pty_master, TCSANOW, &tio);
    fcntl(pty_master, F_SETFL, fcntl(pty_master, F_GETFL) | O_NONBLOCK);
    fprintf(events, "PTY %s\n", name);
}

static void pump_pty(void) {
    if (to_host_n) {
        ssize_t w = write(pty_master, to_host, to_host_n);
        if (w > 0) {
            memmove(to_host, to_host + w, to_host_n - (size_t)w);
            to_host_n -= (size_t)w;
        }
    }
    if (to_avr_r == to_avr_w)
        to_avr_r = to_avr_w = 0;
    if (to_avr_w < sizeof to_avr) {
        ssize_t r = read(pty_master, to_avr + to_avr_w, sizeof to_avr - to_avr_w);
        if (r > 0)
            to_avr_w += (size_t)r;
    }
    while (xon && to_avr_r < to_avr_w)
        avr_raise_irq(uart_in, to_avr[to_avr_r++]);
}

/* ---- commands on stdin ------------------------------------------------------------------------------ */
/* every reset, commanded or by the watchdog inside simavr, passes here (after the cycle timers were cleared) */
static void on_reset(avr_t *a) {
    if (core_reset)
        core_reset(a);
    enc_armed = 0;
    xon = 1;
    gates_released();
    fprintf(events, "R %llu %llu\n", (unsigned long long)sim_cycles(), (unsigned long long)enc_count);
}

static void mcu_reset(uint8_t cause) {
    avr_reset(avr);
    sim_cycles();
    avr->data[MCUSR_ADDR] = cause;
    enc_schedule();
}

static int command(char *line) {
    if (!strncmp(line, "speed ", 6)) {
        double v = atof(line + 6);
        speed = v > 0 ? v : 0;
        enc_schedule();
    } else if (!strcmp(line, "reset")) {
        mcu_reset(0x02); /* EXTRF */
    } else if (!strcmp(line, "quit")) {
        return 1;
    } else if (!strncmp(line, "pause ", 6)) {
        double s = atof(line + 6);
        if (s > 0 && s <= 10)
            usleep((useconds_t)(s * 1e6));
    } else if (line[0]) {
        fprintf(stderr, "harness: unknown command '%s'\n", line);
    }
    return 0;
}

static int poll_stdin(void) {
    static char buf[256];
    static size_t n;
    ssize_t r = read(0, buf + n, sizeof buf - 1 - n);
    if (r == 0)
        return 1; /* stdin closed: the host is gone */
    if (r < 0)
        return 0;
    n += (size_t)r;
    char *nl;
    while ((nl = memchr(buf, '\n', n))) {
        *nl = 0;
        if (command(buf))
            return 1;
        size_t used = (size_t)(nl - buf) + 1;
        memmove(buf, buf + used, n - used);
        n -= used;
    }
    if (n == sizeof buf - 1)
        n = 0;
    return 0;
}

static void no_sleep(avr_t *a, avr_cycle_count_t how_long) {
    (void)a;
    (void)how_long; /* the main loop paces against the wall clock instead */
}

int main(int argc, char **argv) {
    const char *elf = NULL, *count_file = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--count-file") && i + 1 < argc) count_file = argv[++i];
        else if (!strcmp(argv[i], "--speed") && i + 1 < argc) speed = atof(argv[++i]);
        else elf = argv[i];
    }
    if (!elf) {
        fprintf(stderr, "usage: %s FIRMWARE.elf [--count-file PATH] [--speed TICKS_PER_S]\n", argv[0]);
        return 2;
    }
    /* our event lines keep stdout; simavr's printf chatter goes to stderr */
    events = fdopen(dup(1), "w");
    setvbuf(events, NULL, _IOLBF, 0);
    dup2(2, 1);

    if (count_file) {
        int fd = open(count_file, O_RDWR | O_CREAT | O_TRUNC, 0644);
        if (fd < 0 || ftruncate(fd, 4096) < 0) {
            perror(count_file);
            return 1;
        }
        shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (shared == MAP_FAILED) {
            perror("mmap");
            return 1;
        }
        close(fd);
    }

    elf_firmware_t fw;
    memset(&fw, 0, sizeof fw);
    if (elf_read_firmware(elf, &fw) != 0) {
        fprintf(stderr, "harness: cannot read %s\n", elf);
        return 1;
    }
    avr = avr_make_mcu_by_name("atmega328p");
    if (!avr) {
        fprintf(stderr, "harness: simavr has no atmega328p\n");
        return 1;
    }
    avr_init(avr);
    fw.frequency = FREQ;
    avr_load_firmware(avr, &fw);
    avr->frequency = FREQ;
    avr->sleep = no_sleep;
    core_reset = avr->reset;
    avr->reset = on_reset;
    avr->data[MCUSR_ADDR] = 0x01; /* PORF */

    uint32_t flags = 0;
    avr_ioctl(avr, AVR_IOCTL_UART_GET_FLAGS('0'), &flags);
    flags &= ~(uint32_t)(AVR_UART_FLAG_STDIO | AVR_UART_FLAG_POLL_SLEEP);
    avr_ioctl(avr, AVR_IOCTL_UART_SET_FLAGS('0'), &flags);
    uart_in = avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_INPUT);
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUTPUT), uart_out_hook, NULL);
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUT_XON), xon_hook, NULL);
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUT_XOFF), xoff_hook, NULL);

    enc_pin = avr_io_getirq(avr, AVR_IOCTL_IOPORT_GETIRQ('D'), 2);
    for (int g = 0; g < 4; g++)
        avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_IOPORT_GETIRQ('D'), 4 + g), gate_hook,
                                (void *)(intptr_t)g);
    for (int g = 4; g < 8; g++)
        avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_IOPORT_GETIRQ('B'), g - 4), gate_hook,
                                (void *)(intptr_t)g);

    open_pty();
    fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
    publish();
    enc_schedule();
    /* READY once the firmware listens: bytes that reach a UART before RXEN are lost, on a chip as here */
    while (!(avr->data[UCSR0B_ADDR] & RXEN0_BIT) && avr->cycle < FREQ / 10) {
        int state = avr_run(avr);
        if (state == cpu_Done || state == cpu_Crashed)
            break;
    }
    fprintf(events, "READY\n");

    double last_wall = 0;
    pace_t0 = now_s();
    pace_cycle0 = sim_cycles();
    const uint64_t slice = FREQ / 1000000 * PACE_SLICE_US;
    int quit = 0;
    while (!quit) {
        double wall = now_s() - pace_t0;
        uint64_t target = pace_cycle0 + (uint64_t)(wall * FREQ) + slice;
        uint64_t c = sim_cycles();
        if (target > c + slice && target - c - slice > max_lag_cycles)
            max_lag_cycles = target - c - slice;
        if (target > c + MAX_CATCH_UP) {
            /* The OS did not run us for a long while (a loaded machine). Catching up that much would run the
             * MCU faster than the host and fake a host silence; instead the simulated world pauses, belt
             * included, as if the MCU's clock had stopped: counted in STATS. */
            uint64_t lag = target - c - slice;
            pace_t0 += (double)lag / FREQ;
            target -= lag;
            paused_cycles += lag;
            pauses++;
        } else if (target > c + slice) {
            /* Behind by a little: catch up, but at most 10 % faster than the wall clock, so that the host never
             * sees a round trip much shorter than the UART allows (that would skew its clock mapping). */
            uint64_t cap = c + (uint64_t)((wall - last_wall) * FREQ * CATCH_UP_RATE);
            if (target > cap)
                target = cap;
        }
        last_wall = wall;
        while (sim_cycles() < target) {
            int state = avr_run(avr);
            if (state == cpu_Done || state == cpu_Crashed) {
                fprintf(events, "STATS crashed state=%d pc=0x%x\n", state, avr->pc);
                mcu_reset(0x01);
                break;
            }
            enc_schedule(); /* re-arms the encoder after a watchdog reset cleared the cycle timers */
        }
        enc_schedule();
        publish();
        pump_pty();
        quit = poll_stdin();

        /* sleep until the host writes, stdin speaks, or simulated time is due again */
        double ahead = (double)(sim_cycles() - pace_cycle0) / FREQ - (now_s() - pace_t0);
        if (ahead > 0 && !(xon && to_avr_r < to_avr_w)) {
            fd_set rd, wr;
            FD_ZERO(&rd);
            FD_ZERO(&wr);
            FD_SET(0, &rd);
            if (to_avr_w < sizeof to_avr) FD_SET(pty_master, &rd);
            if (to_host_n) FD_SET(pty_master, &wr);
            struct timeval tv = {0, (suseconds_t)(ahead * 1e6)};
            select(pty_master + 1, &rd, &wr, NULL, &tv);
        }
    }
    fprintf(events, "STATS cycles=%llu count=%llu max_lag_us=%llu pauses=%llu paused_us=%llu host_bytes_dropped=%llu\n",
            (unsigned long long)sim_cycles(), (unsigned long long)enc_count,
            (unsigned long long)(max_lag_cycles / (FREQ / 1000000)), (unsigned long long)pauses,
            (unsigned long long)(paused_cycles / (FREQ / 1000000)), (unsigned long long)host_bytes_dropped);
    return 0;
}
