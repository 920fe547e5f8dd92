/* fuzz_json_scan: json_scan_object() alone, on any bytes.
 *
 * The scanner is the one hand-written parser every message goes through
 * (src/json_scan.h). Compared with cJSON in both directions, on the
 * conditions where that is sound (fuzz_common.h, docs/fuzzing.md):
 *   json_scan accepts  =>  cJSON parses it, valid UTF-8, no raw control
 *                          characters, RFC numbers, depth <= 64
 *   all of those       =>  json_scan accepts
 * plus every member's byte ranges, kinds, keys and (unescaped) strings
 * against cJSON's tree. ASan/UBSan catch any read outside the input: the
 * fuzzer hands over a heap buffer of exactly `size` bytes. */
#include "fuzz_common.h"

/* Once per process, before fuzzing: every 1-, 2- and 3-byte sequence (and
 * every 4-byte one with F0-F7 first and a boundary byte last) inside a
 * JSON string, against fz_utf8_ok(). Random mutation rarely lands on one
 * exact boundary (E0 9F, F4 90...); this covers them all, deterministically,
 * in about a second. */
static void utf8_exhaustive(void)
{
    static const unsigned char last[] = {0x00, 0x20, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xFF};
    unsigned char buf[8];
    json_object_t obj;
    for (unsigned n = 1; n <= 4; n++) {
        unsigned long total = n < 4 ? 1ul << (8 * n) : 8ul * 256 * 256 * sizeof last;
        for (unsigned long k = 0; k < total; k++) {
            unsigned char *seq = buf + 1;
            if (n < 4) {
                for (unsigned i = 0; i < n; i++)
                    seq[i] = (unsigned char)(k >> (8 * i));
            } else {
                seq[0] = (unsigned char)(0xF0 + k % 8);
                seq[1] = (unsigned char)(k / 8 % 256);
                seq[2] = (unsigned char)(k / 2048 % 256);
                seq[3] = last[k / 524288];
            }
            bool plain = true;
            for (unsigned i = 0; i < n; i++)
                if (seq[i] < 0x20 || seq[i] == '"' || seq[i] == '\\')
                    plain = false;
            if (!plain)
                continue;
            buf[0] = '"';
            buf[n + 1] = '"';
            json_scan_result_t r = json_scan_object((const char *)buf, n + 2, &obj, NULL);
            bool want = fz_utf8_ok(seq, n);
            FUZZ_ASSERT((r == JSON_SCAN_NOT_OBJECT) == want && (want || r == JSON_SCAN_BAD_JSON),
                        "UTF-8 %02X %02X %02X %02X (%u bytes): scan %d, expected valid=%d", seq[0],
                        n > 1 ? seq[1] : 0, n > 2 ? seq[2] : 0, n > 3 ? seq[3] : 0, n, (int)r, want);
        }
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    utf8_exhaustive();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_reference_t ref;
    fz_reference(data, size, &ref);
    fz_check_scan(data, size, &ref);

    /* Every prefix of an accepted text is rejected, but for the text itself
     * and prefixes that are whole values (a number may be cut: "12" of
     * "123"); cheap to check on the last few bytes only. */
    if (ref.root && cJSON_IsObject(ref.root) && size > 1) {
        json_object_t obj;
        size_t cut = size - 1;
        while (cut > 0 && (data[cut] == ' ' || data[cut] == '\t' || data[cut] == '\n' ||
                           data[cut] == '\r'))
            cut--;
        /* data[cut] is the closing brace of an object: without it, never OK */
        if (data[cut] == '}')
            FUZZ_ASSERT(json_scan_object((const char *)data, cut, &obj, NULL) == JSON_SCAN_BAD_JSON,
                        "an object without its closing brace is accepted");
    }
    cJSON_Delete(ref.root);
    return 0;
}
