/* check: the unit tests' few assertion macros. A failed CHECK prints the
 * file, line and expression and counts; check_done() prints the summary
 * line and returns the exit code. */
#ifndef SMARTSHOP_CHECK_H
#define SMARTSHOP_CHECK_H

#include <stdio.h>
#include <string.h>

static int check_passed, check_failed;

#define CHECK(expr) \
    do { \
        if (expr) check_passed++; \
        else { check_failed++; fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #expr); } \
    } while (0)

#define CHECK_EQ_INT(a, b) \
    do { \
        long long va_ = (long long)(a), vb_ = (long long)(b); \
        if (va_ == vb_) check_passed++; \
        else { check_failed++; fprintf(stderr, "%s:%d: CHECK failed: %s == %s (%lld vs %lld)\n", \
                                       __FILE__, __LINE__, #a, #b, va_, vb_); } \
    } while (0)

static inline int check_done(const char *suite)
{
    printf("%s: %d passed, %d failed\n", suite, check_passed, check_failed);
    return check_failed ? 1 : 0;
}

#endif
