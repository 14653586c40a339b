/* Host-gcc check of protocol.c against firmware_bridge/vectors/ (JSON). tests/firmware_bridge/test_firmware.py
 * turns the JSON into one command per line on stdin; this prints "ok" or "FAIL <why>" per line and exits 1 if
 * anything failed.
 *   crc <hex|-> <crc>                  cobs <data_hex|-> <encoded_hex>
 *   pack <type> <seq> <frame_hex> <n> <field>...   (encode from fields, decode back to the same fields)
 *   invalid <frame_hex> <counter>       (rejected, that counter +1, the next good frame still decodes)
 *   flip <frame_hex>                    (every single-bit flip, delimiter included, yields no frame) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocol.h"

static size_t unhex(const char *s, uint8_t *out) {
    if (!strcmp(s, "-"))
        return 0;
    size_t n = strlen(s) / 2;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(s + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
    }
    return n;
}

static int feed_all(rx_decoder_t *d, const uint8_t *b, size_t n, frame_t *last) {
    int frames = 0;
    frame_t f;
    for (size_t i = 0; i < n; i++)
        if (rx_feed(d, b[i], &f)) {
            frames++;
            *last = f;
        }
    return frames;
}

static uint32_t counter(const rx_decoder_t *d, const char *name) {
    if (!strcmp(name, "crc_errors")) return d->crc_errors;
    if (!strcmp(name, "cobs_errors")) return d->cobs_errors;
    if (!strcmp(name, "short_frames")) return d->short_frames;
    if (!strcmp(name, "version_errors")) return d->version_errors;
    if (!strcmp(name, "overruns")) return d->overruns;
    return 0xFFFFFFFF;
}

static const uint8_t good[] = {0x04, 0x01, 0x02, 0x02, 0x03, 0x76, 0xfa, 0x00}; /* HEARTBEAT seq 2 */

static int run(char *line) {
    static uint8_t a[4096], b[4096], c[4096];
    char *tok = strtok(line, " \n");
    if (!tok)
        return 0;
    if (!strcmp(tok, "crc")) {
        size_t n = unhex(strtok(NULL, " \n"), a);
        unsigned long want = strtoul(strtok(NULL, " \n"), NULL, 10);
        uint16_t got = crc16_ccitt_false(a, n, 0xFFFF);
        if (got != want) return printf("FAIL crc %u != %lu\n", got, want), 1;
    } else if (!strcmp(tok, "cobs")) {
        size_t n = unhex(strtok(NULL, " \n"), a);
        size_t m = unhex(strtok(NULL, " \n"), b);
        size_t e = cobs_encode(a, n, c);
        if (e != m || memcmp(b, c, m)) return printf("FAIL cobs encode\n"), 1;
        int d = cobs_decode(b, m, c);
        if (d != (int)n || memcmp(a, c, n)) return printf("FAIL cobs decode\n"), 1;
    } else if (!strcmp(tok, "pack")) {
        uint8_t type = (uint8_t)atoi(strtok(NULL, " \n"));
        uint16_t seq = (uint16_t)atoi(strtok(NULL, " \n"));
        size_t m = unhex(strtok(NULL, " \n"), b);
        int nf = atoi(strtok(NULL, " \n"));
        uint32_t fields[PROTO_MAX_FIELDS], back[PROTO_MAX_FIELDS];
        for (int i = 0; i < nf; i++)
            fields[i] = (uint32_t)strtoul(strtok(NULL, " \n"), NULL, 10);
        uint8_t payload[PROTO_MAX_PAYLOAD];
        int pl = msg_pack(type, fields, payload);
        if (pl < 0) return printf("FAIL no layout for type %u\n", type), 1;
        size_t e = frame_encode(type, seq, payload, (uint8_t)pl, c);
        if (e != m || memcmp(b, c, m)) return printf("FAIL encode differs\n"), 1;
        rx_decoder_t d;
        frame_t f;
        rx_init(&d);
        if (feed_all(&d, b, m, &f) != 1) return printf("FAIL decode\n"), 1;
        if (f.type != type || f.seq != seq) return printf("FAIL header\n"), 1;
        if (msg_unpack(f.type, f.payload, f.len, back) != nf) return printf("FAIL unpack\n"), 1;
        for (int i = 0; i < nf; i++)
            if (back[i] != fields[i]) return printf("FAIL field %d\n", i), 1;
    } else if (!strcmp(tok, "invalid")) {
        size_t m = unhex(strtok(NULL, " \n"), a);
        const char *name = strtok(NULL, " \n");
        memcpy(a + m, good, sizeof good);
        rx_decoder_t d;
        frame_t f;
        rx_init(&d);
        if (feed_all(&d, a, m + sizeof good, &f) != 1 || f.type != MSG_HEARTBEAT || f.seq != 2)
            return printf("FAIL the good frame after it did not decode alone\n"), 1;
        if (counter(&d, name) != 1) return printf("FAIL %s not counted\n", name), 1;
        if (d.crc_errors + d.cobs_errors + d.short_frames + d.version_errors + d.overruns != 1)
            return printf("FAIL more than one error counted\n"), 1;
    } else if (!strcmp(tok, "flip")) {
        size_t m = unhex(strtok(NULL, " \n"), a);
        for (size_t i = 0; i < m * 8; i++) {
            memcpy(b, a, m);
            b[i / 8] ^= (uint8_t)(1u << (i % 8));
            b[m] = 0;
            rx_decoder_t d;
            frame_t f;
            rx_init(&d);
            if (feed_all(&d, b, m + 1, &f)) return printf("FAIL flip of bit %zu accepted\n", i), 1;
        }
    } else {
        return printf("FAIL unknown command %s\n", tok), 1;
    }
    printf("ok\n");
    return 0;
}

int main(void) {
    static char line[16384];
    int failures = 0;
    while (fgets(line, sizeof line, stdin))
        failures += run(line);
    return failures ? 1 : 0;
}
