/* See protocol.h. COBS is hand-written: a 2 KB-RAM MCU has no library for it, and the same code runs on the host
 * against the vectors that also hold the Python codec. The CRC is avr-libc's on the MCU and the bitwise loop
 * below on the host, which checks it against the vectors. */
#include "protocol.h"

#ifdef __AVR__
#include <util/crc16.h>
#endif

uint16_t crc16_ccitt_false(const uint8_t *data, size_t len, uint16_t crc) {
    while (len--) {
#ifdef __AVR__
        /* XMODEM's update is CCITT-FALSE's (poly 0x1021, not reflected); the caller's 0xFFFF start makes it
         * CCITT-FALSE. About 25 cycles a byte against 100 for the loop: at 250000 baud, a byte every 640. */
        crc = _crc_xmodem_update(crc, *data++);
#else
        crc ^= (uint16_t)(*data++) << 8;
        for (uint8_t i = 0; i < 8; i++)
            crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
#endif
    }
    return crc;
}

size_t cobs_encode(const uint8_t *in, size_t len, uint8_t *out) {
    size_t code_at = 0, o = 1;
    uint8_t code = 1;
    for (size_t i = 0; i < len; i++) {
        if (in[i]) {
            out[o++] = in[i];
            code++;
        }
        if (!in[i] || code == 0xFF) {
            out[code_at] = code;
            code = 1;
            code_at = o;
            if (!in[i] || i + 1 < len) /* a full block at the very end opens no empty block */
                o++;
        }
    }
    if (code_at < o)
        out[code_at] = code;
    return o;
}

int cobs_decode(const uint8_t *in, size_t len, uint8_t *out) {
    size_t i = 0, o = 0;
    while (i < len) {
        uint8_t code = in[i];
        if (code == 0 || i + code > len)
            return -1;
        for (uint8_t k = 1; k < code; k++) {
            uint8_t b = in[i + k];
            if (b == 0)
                return -1;
            out[o++] = b;
        }
        i += code;
        if (code != 0xFF && i < len)
            out[o++] = 0;
    }
    return (int)o;
}

size_t frame_encode(uint8_t type, uint16_t seq, const uint8_t *payload, uint8_t len, uint8_t *out) {
    uint8_t body[PROTO_MAX_BODY];
    if (len > PROTO_MAX_PAYLOAD)
        return 0;
    body[0] = PROTO_VERSION;
    body[1] = type;
    body[2] = (uint8_t)seq;
    body[3] = (uint8_t)(seq >> 8);
    for (uint8_t i = 0; i < len; i++)
        body[PROTO_HEADER_LEN + i] = payload[i];
    uint16_t crc = crc16_ccitt_false(body, PROTO_HEADER_LEN + len, 0xFFFF);
    body[PROTO_HEADER_LEN + len] = (uint8_t)crc;
    body[PROTO_HEADER_LEN + len + 1] = (uint8_t)(crc >> 8);
    size_t n = cobs_encode(body, PROTO_HEADER_LEN + len + PROTO_CRC_LEN, out);
    out[n++] = 0;
    return n;
}

enum frame_error frame_decode(uint8_t *buf, size_t len, frame_t *f) {
    int n = cobs_decode(buf, len, buf);
    if (n < 0)
        return FRAME_COBS;
    if (n < PROTO_HEADER_LEN + PROTO_CRC_LEN)
        return FRAME_SHORT;
    uint16_t crc = (uint16_t)(buf[n - 2] | (buf[n - 1] << 8));
    if (crc16_ccitt_false(buf, (size_t)n - PROTO_CRC_LEN, 0xFFFF) != crc)
        return FRAME_CRC;
    if (buf[0] != PROTO_VERSION)
        return FRAME_VERSION;
    f->type = buf[1];
    f->seq = (uint16_t)(buf[2] | (buf[3] << 8));
    f->len = (uint8_t)(n - PROTO_HEADER_LEN - PROTO_CRC_LEN);
    for (uint8_t i = 0; i < f->len; i++)
        f->payload[i] = buf[PROTO_HEADER_LEN + i];
    return FRAME_OK;
}

void rx_init(rx_decoder_t *d) {
    uint8_t *p = (uint8_t *)d;
    for (size_t i = 0; i < sizeof(*d); i++)
        p[i] = 0;
}

int rx_feed(rx_decoder_t *d, uint8_t byte, frame_t *f) {
    if (byte != 0) {
        if (d->overflowed)
            return 0;
        if (d->n >= PROTO_MAX_ENCODED) {
            d->overflowed = 1;
            d->n = 0;
            d->overruns++;
            return 0;
        }
        d->buf[d->n++] = byte;
        return 0;
    }
    uint8_t n = d->n, overflowed = d->overflowed;
    d->n = 0;
    d->overflowed = 0;
    if (overflowed || n == 0)
        return 0;
    switch (frame_decode(d->buf, n, f)) {
    case FRAME_OK: d->frames++; return 1;
    case FRAME_COBS: d->cobs_errors++; break;
    case FRAME_SHORT: d->short_frames++; break;
    case FRAME_CRC: d->crc_errors++; break;
    case FRAME_VERSION: d->version_errors++; break;
    default: break;
    }
    return 0;
}

const char *msg_layout(uint8_t type) {
    switch (type) {
    case MSG_HELLO: case MSG_HEARTBEAT: case MSG_SAFE: case MSG_STATUS: return "";
    case MSG_QUEUE_EJECT: return "IBIH";
    case MSG_CANCEL: return "I";
    case MSG_TEST_PULSE: return "BH";
    case MSG_CONFIGURE: return "H";
    case MSG_HELLO | MSG_REPLY: return "HBHBBBII";
    case MSG_HEARTBEAT | MSG_REPLY: return "HBBII";
    case MSG_QUEUE_EJECT | MSG_REPLY: return "HBBI";
    case MSG_CANCEL | MSG_REPLY: return "HB";
    case MSG_SAFE | MSG_REPLY: return "HBB";
    case MSG_STATUS | MSG_REPLY: return "HBBIIBBIIHHHHHIHHH";
    case MSG_TEST_PULSE | MSG_REPLY: return "HB";
    case MSG_CONFIGURE | MSG_REPLY: return "HB";
    case MSG_BOOT: return "BHB";
    case MSG_ENCODER: return "II";
    case MSG_FIRED: return "IBIII";
    case MSG_FAILSAFE: return "BB";
    case MSG_NAK: return "HBB";
    default: return NULL;
    }
}

static uint8_t width(char c) { return c == 'B' ? 1 : c == 'H' ? 2 : 4; }

int msg_pack(uint8_t type, const uint32_t *fields, uint8_t *payload) {
    const char *l = msg_layout(type);
    if (!l)
        return -1;
    int o = 0;
    for (; *l; l++, fields++) {
        uint32_t v = *fields;
        for (uint8_t k = 0; k < width(*l); k++, v >>= 8) /* by 8: a byte move (a shift by 8 * k loops bit by bit) */
            payload[o++] = (uint8_t)v;
    }
    return o;
}

int msg_unpack(uint8_t type, const uint8_t *payload, uint8_t len, uint32_t *fields) {
    const char *l = msg_layout(type);
    if (!l)
        return -1;
    int need = 0, n = 0;
    for (const char *c = l; *c; c++)
        need += width(*c);
    if (need != len)
        return -1;
    for (; *l; l++, n++) {
        uint8_t w = width(*l);
        uint32_t v = 0;
        for (uint8_t k = w; k-- > 0;) /* little-endian, from the top byte down: shifts by 8 only */
            v = (v << 8) | payload[k];
        payload += w;
        fields[n] = v;
    }
    return n;
}
