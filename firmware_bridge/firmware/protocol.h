/* The bridge wire format (firmware_bridge/PROTOCOL.md) in portable C: no AVR headers, so the host gcc builds
 * the same code for the vector tests (test_vectors.c) that avr-gcc builds into the firmware. */
#ifndef EDGESORT_PROTOCOL_H
#define EDGESORT_PROTOCOL_H

#include <stdint.h>
#include <stddef.h>

#define PROTO_VERSION 1
#define PROTO_HEADER_LEN 4
#define PROTO_CRC_LEN 2
#define PROTO_MAX_PAYLOAD 58
#define PROTO_MAX_BODY (PROTO_HEADER_LEN + PROTO_MAX_PAYLOAD + PROTO_CRC_LEN) /* 64 */
#define PROTO_MAX_ENCODED (PROTO_MAX_BODY + 1)                                /* 65, without 0x00 */
#define PROTO_MAX_FIELDS 18

enum msg_type {
    MSG_HELLO = 0x01, MSG_HEARTBEAT = 0x02, MSG_QUEUE_EJECT = 0x03, MSG_CANCEL = 0x04, MSG_SAFE = 0x05,
    MSG_STATUS = 0x06, MSG_TEST_PULSE = 0x07, MSG_CONFIGURE = 0x08,
    MSG_REPLY = 0x80, /* reply type = command | MSG_REPLY */
    MSG_BOOT = 0x90, MSG_ENCODER = 0x91, MSG_FIRED = 0x92, MSG_FAILSAFE = 0x93, MSG_NAK = 0xFF
};

enum result {
    RES_OK = 0, RES_LATE = 1, RES_FULL = 2, RES_BAD_ARG = 3, RES_NOT_LINKED = 4, RES_NOT_FOUND = 5,
    RES_UNKNOWN_TYPE = 6, RES_BAD_VERSION = 7, RES_BAD_LENGTH = 8
};

enum mcu_state { STATE_UNLINKED = 0, STATE_LINKED = 1, STATE_FAILSAFE = 2 };

enum frame_error { FRAME_OK = 0, FRAME_COBS, FRAME_SHORT, FRAME_CRC, FRAME_VERSION, FRAME_OVERRUN };

typedef struct {
    uint8_t type;
    uint16_t seq;
    uint8_t len;
    uint8_t payload[PROTO_MAX_PAYLOAD];
} frame_t;

/* Streaming receiver: bounded buffer, resync at 0x00, counters as in PROTOCOL.md. */
typedef struct {
    uint8_t buf[PROTO_MAX_ENCODED];
    uint8_t n;
    uint8_t overflowed;
    uint32_t frames;
    uint16_t crc_errors, cobs_errors, short_frames, version_errors, overruns;
} rx_decoder_t;

uint16_t crc16_ccitt_false(const uint8_t *data, size_t len, uint16_t crc);
/* out must hold len + len/254 + 1 bytes; returns the encoded length (no 0x00 delimiter written). */
size_t cobs_encode(const uint8_t *in, size_t len, uint8_t *out);
/* strict; returns the decoded length or -1. out may alias in (decoding never writes ahead of reading). */
int cobs_decode(const uint8_t *in, size_t len, uint8_t *out);

/* Whole wire frame with delimiter into out (>= PROTO_MAX_ENCODED + 1 bytes); returns its length, 0 if the
 * payload is too long. */
size_t frame_encode(uint8_t type, uint16_t seq, const uint8_t *payload, uint8_t len, uint8_t *out);
/* One frame without its delimiter (decoded in place: buf is clobbered). */
enum frame_error frame_decode(uint8_t *buf, size_t len, frame_t *f);

void rx_init(rx_decoder_t *d);
/* Feed one byte; returns 1 and fills f when a valid frame ends with this byte. */
int rx_feed(rx_decoder_t *d, uint8_t byte, frame_t *f);

/* Payload layouts: one letter per field, B = u8, H = u16, I = u32 (little-endian), as protocol.py's LAYOUTS.
 * NULL for an unknown type. */
const char *msg_layout(uint8_t type);
/* Pack fields by the type's layout; returns the payload length, -1 for an unknown type. */
int msg_pack(uint8_t type, const uint32_t *fields, uint8_t *payload);
/* Unpack; returns the number of fields, -1 for an unknown type or a payload of the wrong length. */
int msg_unpack(uint8_t type, const uint8_t *payload, uint8_t len, uint32_t *fields);

#endif
