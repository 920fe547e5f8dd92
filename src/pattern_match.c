/* pattern_match: our own Lua 5.4 pattern matcher with a step budget
 * (pattern_match.h). Written from the reference manual, section 6.4.1;
 * where the manual leaves a behaviour open (error messages, the depth
 * limit, a class at the end of a range) it does what stock Lua was
 * measured to do, and tests/unit/test_pattern_match_diff.c compares the two.
 *
 * A call compiles the pattern into nodes (compile()), then runs them from
 * each candidate start position (run()). Errors are lazy, as in stock Lua:
 * a malformed piece of pattern compiles to an OP_ERROR node that raises its
 * message only when the matcher reaches it, so ("b"):find("a[") is nil and
 * ("a"):find("a[") an error. Quantified items, captures and the choice
 * points they leave go on an explicit stack of frames; its limit and which
 * constructs take a frame reproduce stock's "pattern too complex". */
#define _GNU_SOURCE             /* memmem */
#include "pattern_match.h"

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#define MAX_CAPTURES 32         /* stock's LUA_MAXCAPTURES */
#define MAX_FRAMES 199          /* stock fails past this many pending choices */
#define CAP_OPEN (-1)           /* capture length: not closed yet */
#define CAP_POSITION (-2)       /* capture length: a position capture () */
/* Work on many bytes at once costs a step per this many bytes: BULK for
 * memchr, memcmp and memmem, LOOP for loops that look at each byte or copy
 * into a buffer; compiling costs a step per pattern byte. These keep a
 * budget of 10^6 steps under about 50 ms of matching, whatever the mix. */
#define BULK_BYTES_PER_STEP 32
#define LOOP_BYTES_PER_STEP 8

/* ---- character sets ------------------------------------------------------ */

typedef struct {
    uint64_t w[4];
} charset;

static inline bool in_set(const charset *cs, unsigned char c)
{
    return (cs->w[c >> 6] >> (c & 63)) & 1;
}

static inline void set_add(charset *cs, unsigned char c)
{
    cs->w[c >> 6] |= (uint64_t)1 << (c & 63);
}

/* Adds lo..hi (nothing if hi < lo), a word at a time: a pattern of long
 * ranges must not cost 256 steps per 3 bytes to compile. */
static void set_add_range(charset *cs, unsigned lo, unsigned hi)
{
    for (unsigned w = 0; w < 4 && lo <= hi; w++) {
        unsigned first = w * 64, last = first + 63;
        if (hi < first || lo > last)
            continue;
        unsigned a = lo > first ? lo - first : 0, b = hi < last ? hi - first : 63;
        uint64_t upto_b = b == 63 ? ~(uint64_t)0 : ((uint64_t)1 << (b + 1)) - 1;
        cs->w[w] |= upto_b & ~(((uint64_t)1 << a) - 1);
    }
}

/* The classes of 6.4.1 (%a, %c, ...) in the C locale, plus the deprecated
 * %z (the NUL byte) that stock still accepts; generated from <ctype.h>. */
static const charset class_sets[26] = {
    ['a' - 'a'] = {{0x0000000000000000u, 0x07fffffe07fffffeu, 0, 0}},
    ['c' - 'a'] = {{0x00000000ffffffffu, 0x8000000000000000u, 0, 0}},
    ['d' - 'a'] = {{0x03ff000000000000u, 0x0000000000000000u, 0, 0}},
    ['g' - 'a'] = {{0xfffffffe00000000u, 0x7fffffffffffffffu, 0, 0}},
    ['l' - 'a'] = {{0x0000000000000000u, 0x07fffffe00000000u, 0, 0}},
    ['p' - 'a'] = {{0xfc00fffe00000000u, 0x78000001f8000001u, 0, 0}},
    ['s' - 'a'] = {{0x0000000100003e00u, 0x0000000000000000u, 0, 0}},
    ['u' - 'a'] = {{0x0000000000000000u, 0x0000000007fffffeu, 0, 0}},
    ['w' - 'a'] = {{0x03ff000000000000u, 0x07fffffe07fffffeu, 0, 0}},
    ['x' - 'a'] = {{0x03ff000000000000u, 0x0000007e0000007eu, 0, 0}},
    ['z' - 'a'] = {{0x0000000000000001u, 0x0000000000000000u, 0, 0}},
};

/* The class a letter after '%' names, or NULL (then it is the letter
 * itself); *negated for the upper-case complement. */
static const charset *class_of(unsigned char letter, bool *negated)
{
    unsigned char lower = letter | 0x20;
    if (lower < 'a' || lower > 'z' || !memchr("acdglpsuwxz", lower, 11))
        return NULL;
    *negated = letter != lower;
    return &class_sets[lower - 'a'];
}

/* ---- the compiled pattern ------------------------------------------------ */

enum op {
    OP_END,         /* the pattern matched */
    OP_EOS,         /* '$' at the end of the pattern */
    OP_LITERAL,     /* `len` bytes at u.lit */
    OP_ANY,         /* '.' */
    OP_CHAR,        /* one byte, `c` */
    OP_SET,         /* a class or [set]: u.set, complemented if `neg` */
    OP_OPEN,        /* '(' */
    OP_POSITION,    /* '()' */
    OP_CLOSE,       /* ')' */
    OP_BALANCE,     /* %bxy: x in `c`, y in `c2` */
    OP_FRONTIER,    /* %f[set]: u.set */
    OP_BACKREF,     /* %1-%9 (and %0, an error when reached): the digit in `c` */
    OP_ERROR,       /* a malformed pattern: raises u.msg when reached */
};

enum quant { Q_ONE, Q_OPT, Q_STAR, Q_PLUS, Q_LAZY };

typedef struct {
    uint8_t op, quant, c, c2;
    uint8_t neg;
    uint32_t len;
    union {
        const charset *set;
        const char *lit;
        const char *msg;
    } u;
} node;

typedef struct {
    node *nodes;
    charset *sets;
    char *lits;
    size_t cap_nodes, cap_sets, cap_lits;   /* room in the three arrays */
    size_t n_nodes, n_sets, n_lits;         /* what the pattern needs */
    node scratch;           /* written to when there is no room; never read */
} program;

/* Appends a node (counting it even when there is no room). */
static node *emit(program *pr, enum op op)
{
    node *n = pr->n_nodes < pr->cap_nodes ? &pr->nodes[pr->n_nodes] : &pr->scratch;
    pr->n_nodes++;
    memset(n, 0, sizeof *n);
    n->op = (uint8_t)op;
    return n;
}

static void emit_error(program *pr, const char *msg)
{
    emit(pr, OP_ERROR)->u.msg = msg;
}

static const char *const MISSING_BRACKET = "malformed pattern (missing ']')";

/* The [set] whose '[' is at p[i]: returns the index of its closing ']',
 * or 0 if there is none. Its members go into *cs. A ']' right after '['
 * (or '[^') is a member, '%' escapes the next byte, and "x-y" is a range
 * when y comes before the closing ']'. */
static size_t parse_set(const char *p, size_t lp, size_t i, charset *cs)
{
    size_t k = i + 1, first;
    bool negated = false;
    if (k < lp && p[k] == '^') {
        negated = true;
        k++;
    }
    first = k;
    /* the end: the first ']' that is neither the first member nor escaped */
    do {
        if (k >= lp)
            return 0;
        if (p[k++] == '%' && k < lp)
            k++;
    } while (k >= lp || p[k] != ']');
    size_t end = k;
    memset(cs, 0, sizeof *cs);
    for (k = first; k < end; k++) {
        unsigned char c = (unsigned char)p[k];
        if (c == '%') {
            /* may take the closing ']' itself when a range ended on '%' */
            unsigned char e = (unsigned char)p[++k];
            bool neg;
            const charset *cl = class_of(e, &neg);
            if (cl) {
                for (int w = 0; w < 4; w++)
                    cs->w[w] |= neg ? ~cl->w[w] : cl->w[w];
            } else {
                set_add(cs, e);
            }
        } else if (p[k + 1] == '-' && k + 2 < end) {
            set_add_range(cs, c, (unsigned char)p[k + 2]);
            k += 2;
        } else {
            set_add(cs, c);
        }
    }
    if (negated)
        for (int w = 0; w < 4; w++)
            cs->w[w] = ~cs->w[w];
    return end;
}

/* A set into the program's array (counted even when there is no room). */
static const charset *keep_set(program *pr, const charset *cs)
{
    const charset *kept = NULL;
    if (pr->n_sets < pr->cap_sets) {
        pr->sets[pr->n_sets] = *cs;
        kept = &pr->sets[pr->n_sets];
    }
    pr->n_sets++;
    return kept;
}

/* Compiles p[0..lp) (without a leading anchor '^') into pr, within its
 * capacities; returns true if everything fit, else pr->n_* say how much
 * room the pattern needs. Never raises: a malformed part becomes OP_ERROR
 * and ends the program, since the matcher can never get past it. */
static bool compile(program *pr, const char *p, size_t lp)
{
    pr->n_nodes = pr->n_sets = pr->n_lits = 0;
    node *run = NULL;           /* the literal node being extended, if any */
    size_t i = 0;
    while (i < lp) {
        unsigned char c = (unsigned char)p[i];
        node *n;
        if (c == '(') {
            if (i + 1 < lp && p[i + 1] == ')') {
                emit(pr, OP_POSITION);
                i += 2;
            } else {
                emit(pr, OP_OPEN);
                i++;
            }
            run = NULL;
            continue;
        }
        if (c == ')') {
            emit(pr, OP_CLOSE);
            run = NULL;
            i++;
            continue;
        }
        if (c == '$' && i + 1 == lp) {
            emit(pr, OP_EOS);
            run = NULL;
            i++;
            continue;
        }
        if (c == '%') {
            if (i + 1 == lp) {
                emit_error(pr, "malformed pattern (ends with '%')");
                goto done;
            }
            unsigned char d = (unsigned char)p[i + 1];
            if (d == 'b') {
                if (i + 4 > lp) {
                    emit_error(pr, "malformed pattern (missing arguments to '%b')");
                    goto done;
                }
                n = emit(pr, OP_BALANCE);
                n->c = (uint8_t)p[i + 2];
                n->c2 = (uint8_t)p[i + 3];
                run = NULL;
                i += 4;
                continue;
            }
            if (d == 'f') {
                i += 2;
                if (i >= lp || p[i] != '[') {
                    emit_error(pr, "missing '[' after '%f' in pattern");
                    goto done;
                }
                charset cs;
                size_t end = parse_set(p, lp, i, &cs);
                if (!end) {
                    emit_error(pr, MISSING_BRACKET);
                    goto done;
                }
                const charset *kept = keep_set(pr, &cs);
                emit(pr, OP_FRONTIER)->u.set = kept;
                run = NULL;
                i = end + 1;
                continue;
            }
            if (d >= '0' && d <= '9') {
                emit(pr, OP_BACKREF)->c = d;
                run = NULL;
                i += 2;
                continue;
            }
        }
        /* a single character class, maybe followed by a quantifier */
        enum op op;
        const charset *set = NULL;
        bool neg = false;
        size_t next;
        if (c == '.') {
            op = OP_ANY;
            next = i + 1;
        } else if (c == '%') {
            c = (unsigned char)p[i + 1];
            set = class_of(c, &neg);
            op = set ? OP_SET : OP_CHAR;
            next = i + 2;
        } else if (c == '[') {
            charset cs;
            size_t end = parse_set(p, lp, i, &cs);
            if (!end) {
                emit_error(pr, MISSING_BRACKET);
                goto done;
            }
            set = keep_set(pr, &cs);
            op = OP_SET;
            next = end + 1;
        } else {
            op = OP_CHAR;
            next = i + 1;
        }
        enum quant q = Q_ONE;
        if (next < lp) {
            switch (p[next]) {
            case '?': q = Q_OPT; break;
            case '*': q = Q_STAR; break;
            case '+': q = Q_PLUS; break;
            case '-': q = Q_LAZY; break;
            default: break;
            }
        }
        if (q != Q_ONE)
            next++;
        if (op == OP_CHAR && q == Q_ONE) {
            /* runs of plain bytes become one node, compared at once */
            if (!run) {
                run = emit(pr, OP_LITERAL);
                run->u.lit = pr->n_lits < pr->cap_lits ? pr->lits + pr->n_lits : NULL;
            }
            if (pr->n_lits < pr->cap_lits)
                pr->lits[pr->n_lits] = (char)c;
            pr->n_lits++;
            run->len++;
        } else {
            n = emit(pr, op);
            n->quant = (uint8_t)q;
            n->c = c;
            n->neg = neg;
            n->u.set = set;
            run = NULL;
        }
        i = next;
    }
done:
    emit(pr, OP_END);
    return pr->n_nodes <= pr->cap_nodes && pr->n_sets <= pr->cap_sets &&
           pr->n_lits <= pr->cap_lits;
}

/* ---- matching ------------------------------------------------------------ */

/* Which constructs leave a frame (measured against stock: they are the
 * depth its "pattern too complex" counts): a '?' item that matched, a '*'
 * or '-' item that matches here (all its alternatives, the empty one too),
 * a '+' item after its first byte, and each '(', '()' and ')'. An item
 * that may match nothing and does not match here leaves none; literals,
 * %b, %f and back references never do. */
enum frame_kind { F_OPT, F_STAR, F_LAZY, F_UNDO_OPEN, F_UNDO_CLOSE };

/* A pending choice (where to go on failure) or a capture change to undo. */
typedef struct {
    const char *s;          /* OPT: resume here; STAR: base; LAZY: current */
    const node *item;       /* the quantified item */
    size_t count;           /* STAR: how many repetitions are being tried */
    uint8_t kind, cap;
} frame;

typedef struct {
    lua_State *L;
    const char *src, *end;  /* the subject */
    long *steps;            /* the budget (or `unlimited`) */
    long unlimited;
    int level;              /* captures opened so far */
    struct {
        const char *init;
        ptrdiff_t len;      /* or CAP_OPEN, CAP_POSITION */
    } cap[MAX_CAPTURES];
    frame frames[MAX_FRAMES];
} matchstate;

static void ms_init(matchstate *ms, lua_State *L, const char *s, size_t ls)
{
    ms->L = L;
    ms->src = s;
    ms->end = s + ls;
    ms->steps = lua_touserdata(L, lua_upvalueindex(1));
    ms->unlimited = LONG_MAX;
    if (!ms->steps)
        ms->steps = &ms->unlimited;
    ms->level = 0;
}

static void __attribute__((noinline, noreturn)) out_of_budget(lua_State *L)
{
    luaL_error(L, "%s", PATTERN_MATCH_BUDGET_ERROR);
    abort();    /* not reached: luaL_error does not return */
}

static inline void charge(matchstate *ms, long n)
{
    if ((*ms->steps -= n) < 0)
        out_of_budget(ms->L);
}

/* One step plus a share for `bytes` scanned or compared in bulk... */
static inline void charge_bulk(matchstate *ms, size_t bytes)
{
    charge(ms, 1 + (long)(bytes / BULK_BYTES_PER_STEP));
}

/* ...or looked at one by one, or copied. */
static inline void charge_loop(matchstate *ms, size_t bytes)
{
    charge(ms, 1 + (long)(bytes / LOOP_BYTES_PER_STEP));
}

static inline bool single(const node *n, unsigned char c)
{
    switch (n->op) {
    case OP_ANY: return true;
    case OP_CHAR: return c == n->c;
    default: return in_set(n->u.set, c) != n->neg;
    }
}

/* How many bytes from s on the item matches, one after another. */
static size_t repeat_count(matchstate *ms, const char *s, const node *n)
{
    size_t i = 0, room = (size_t)(ms->end - s);
    if (n->op == OP_ANY) {
        i = room;
    } else if (n->op == OP_CHAR) {
        while (i < room && (unsigned char)s[i] == n->c)
            i++;
    } else {
        const charset *cs = n->u.set;
        bool want = !n->neg;
        while (i < room && in_set(cs, (unsigned char)s[i]) == want)
            i++;
    }
    charge_loop(ms, i);
    return i;
}

static void push(matchstate *ms, int *sp, enum frame_kind kind, const char *s,
                 const node *item)
{
    if (*sp >= MAX_FRAMES)
        luaL_error(ms->L, "pattern too complex");
    frame *f = &ms->frames[(*sp)++];
    f->kind = (uint8_t)kind;
    f->s = s;
    f->item = item;
}

/* Matches the program from s; returns where the match ends, or NULL.
 * The captures are left in ms. */
static const char *run(matchstate *ms, const char *s, const node *pc)
{
    int sp = 0;
    ms->level = 0;
    for (;;) {
        charge(ms, 1);
        switch (pc->op) {
        case OP_END:
            return s;
        case OP_EOS:
            if (s == ms->end)
                return s;
            goto fail;
        case OP_LITERAL: {
            size_t n = pc->len;
            if ((size_t)(ms->end - s) < n)
                goto fail;
            if (n >= BULK_BYTES_PER_STEP)
                charge_bulk(ms, n);     /* before: a compare may fail late */
            if (memcmp(s, pc->u.lit, n) != 0)
                goto fail;
            s += n;
            pc++;
            continue;
        }
        case OP_ANY:
        case OP_CHAR:
        case OP_SET: {
            bool m = s < ms->end && single(pc, (unsigned char)*s);
            /* An item that may match nothing and does not match here
             * leaves no choice behind (stock takes no depth for it). */
            switch (pc->quant) {
            case Q_ONE:
                if (!m)
                    goto fail;
                s++;
                break;
            case Q_OPT:
                if (m) {
                    push(ms, &sp, F_OPT, s, pc);
                    s++;
                }
                break;
            case Q_STAR:
            case Q_PLUS: {
                if (!m) {
                    if (pc->quant == Q_PLUS)
                        goto fail;
                    break;
                }
                if (pc->quant == Q_PLUS)
                    s++;
                size_t i = repeat_count(ms, s, pc);
                push(ms, &sp, F_STAR, s, pc);
                ms->frames[sp - 1].count = i;
                s += i;
                break;
            }
            case Q_LAZY:
                if (m)
                    push(ms, &sp, F_LAZY, s, pc);
                break;
            }
            pc++;
            continue;
        }
        case OP_OPEN:
        case OP_POSITION:
            if (ms->level >= MAX_CAPTURES)
                luaL_error(ms->L, "too many captures");
            ms->cap[ms->level].init = s;
            ms->cap[ms->level].len = pc->op == OP_OPEN ? CAP_OPEN : CAP_POSITION;
            ms->level++;
            push(ms, &sp, F_UNDO_OPEN, s, pc);
            pc++;
            continue;
        case OP_CLOSE: {
            int l = ms->level - 1;
            while (l >= 0 && ms->cap[l].len != CAP_OPEN)
                l--;
            if (l < 0)
                luaL_error(ms->L, "invalid pattern capture");
            ms->cap[l].len = s - ms->cap[l].init;
            push(ms, &sp, F_UNDO_CLOSE, s, pc);
            ms->frames[sp - 1].cap = (uint8_t)l;
            pc++;
            continue;
        }
        case OP_BALANCE: {
            if (s >= ms->end || (unsigned char)*s != pc->c)
                goto fail;
            const char *t = s + 1;
            int depth = 1;
            for (; t < ms->end; t++) {
                unsigned char c = (unsigned char)*t;
                if (c == pc->c2) {      /* the closer first: %bxx pairs */
                    if (--depth == 0)
                        break;
                } else if (c == pc->c) {
                    depth++;
                }
            }
            charge_loop(ms, (size_t)(t - s));
            if (t >= ms->end)
                goto fail;
            s = t + 1;
            pc++;
            continue;
        }
        case OP_FRONTIER: {
            /* the subject's ends count as '\0' */
            unsigned char prev = s > ms->src ? (unsigned char)s[-1] : 0;
            unsigned char next = s < ms->end ? (unsigned char)*s : 0;
            if (in_set(pc->u.set, prev) || !in_set(pc->u.set, next))
                goto fail;
            pc++;
            continue;
        }
        case OP_BACKREF: {
            int l = pc->c - '1';
            if (l < 0 || l >= ms->level || ms->cap[l].len == CAP_OPEN)
                luaL_error(ms->L, "invalid capture index %%%d", l + 1);
            ptrdiff_t len = ms->cap[l].len;
            /* a position capture has no text: it never matches */
            if (len < 0 || ms->end - s < len)
                goto fail;
            charge_bulk(ms, (size_t)len);
            if (memcmp(s, ms->cap[l].init, (size_t)len) != 0)
                goto fail;
            s += len;
            pc++;
            continue;
        }
        case OP_ERROR:
        default:
            luaL_error(ms->L, "%s", pc->u.msg);
            return NULL;
        }
    fail:
        for (;;) {
            if (sp == 0)
                return NULL;
            frame *f = &ms->frames[sp - 1];
            switch (f->kind) {
            case F_UNDO_OPEN:
                ms->level--;
                sp--;
                continue;
            case F_UNDO_CLOSE:
                ms->cap[f->cap].len = CAP_OPEN;
                sp--;
                continue;
            case F_OPT:             /* the last choice: without the byte */
                s = f->s;
                pc = f->item + 1;
                sp--;
                break;
            case F_STAR:
                if (f->count == 0) {
                    sp--;
                    continue;
                }
                f->count--;
                s = f->s + f->count;
                pc = f->item + 1;
                break;
            case F_LAZY:
                if (f->s >= ms->end || !single(f->item, (unsigned char)*f->s)) {
                    sp--;
                    continue;
                }
                s = ++f->s;
                pc = f->item + 1;
                break;
            }
            break;
        }
    }
}

/* Where a match could start at or after s: a program that begins with a
 * literal can only match where its first byte is (positions skipped match
 * nothing, raise nothing and take no depth). Returns ms->end + 1 if none. */
static const char *next_start(matchstate *ms, const node *prog, const char *s)
{
    if (prog->op != OP_LITERAL || s >= ms->end)
        return s;
    const char *hit = memchr(s, prog->u.lit[0], (size_t)(ms->end - s));
    charge_bulk(ms, (size_t)((hit ? hit : ms->end) - s));
    return hit ? hit : ms->end + 1;
}

/* ---- results ------------------------------------------------------------- */

/* Pushes capture i (the whole match s..e when the pattern has none). */
static void push_capture(matchstate *ms, int i, const char *s, const char *e)
{
    if (i >= ms->level) {
        if (i != 0)
            luaL_error(ms->L, "invalid capture index %%%d", i + 1);
        lua_pushlstring(ms->L, s, (size_t)(e - s));
        return;
    }
    ptrdiff_t len = ms->cap[i].len;
    if (len == CAP_OPEN)
        luaL_error(ms->L, "unfinished capture");
    if (len == CAP_POSITION)
        lua_pushinteger(ms->L, (ms->cap[i].init - ms->src) + 1);
    else
        lua_pushlstring(ms->L, ms->cap[i].init, (size_t)len);
}

/* Pushes all captures (or the whole match if s is not NULL and there are
 * none); returns how many. */
static int push_captures(matchstate *ms, const char *s, const char *e)
{
    int n = (ms->level == 0 && s) ? 1 : ms->level;
    luaL_checkstack(ms->L, n, "too many captures");
    for (int i = 0; i < n; i++)
        push_capture(ms, i, s, e);
    return n;
}

/* ---- compiling into the C stack or a userdata ---------------------------- */

enum { STACK_NODES = 48, STACK_SETS = 6, STACK_LITS = 192 };

typedef struct {
    node nodes[STACK_NODES];
    charset sets[STACK_SETS];
    char lits[STACK_LITS];
} stack_room;

static size_t program_bytes(const program *pr)
{
    return pr->n_nodes * sizeof(node) + pr->n_sets * sizeof(charset) + pr->n_lits;
}

/* Points pr's arrays into `mem` (sized by program_bytes) and compiles. */
static void compile_into(program *pr, void *mem, const char *p, size_t lp)
{
    char *m = mem;
    pr->cap_nodes = pr->n_nodes;
    pr->cap_sets = pr->n_sets;
    pr->cap_lits = pr->n_lits;
    pr->nodes = (node *)m;
    pr->sets = (charset *)(m + pr->n_nodes * sizeof(node));
    pr->lits = m + pr->n_nodes * sizeof(node) + pr->n_sets * sizeof(charset);
    compile(pr, p, lp);
}

/* Compiles into `room` if the pattern fits, else into a new userdata left
 * on the stack (collected with the call's frame). */
static const node *compile_here(matchstate *ms, stack_room *room, const char *p, size_t lp)
{
    program pr = {.nodes = room->nodes, .sets = room->sets, .lits = room->lits,
                  .cap_nodes = STACK_NODES, .cap_sets = STACK_SETS, .cap_lits = STACK_LITS};
    charge(ms, (long)lp);
    if (compile(&pr, p, lp))
        return pr.nodes;
    void *mem = lua_newuserdatauv(ms->L, program_bytes(&pr), 0);
    compile_into(&pr, mem, p, lp);
    return pr.nodes;
}

/* ---- the library functions ----------------------------------------------- */

/* The 1-based start position `pos` (negative from the end, 6.4) as an
 * offset; may be past the end (ls + 1 or more). */
static size_t start_offset(lua_Integer pos, size_t ls)
{
    if (pos > 0)
        return (size_t)pos - 1;
    if (pos == 0 || pos < -(lua_Integer)ls)
        return 0;
    return ls + (size_t)pos;
}

static bool has_specials(const char *p, size_t lp)
{
    for (size_t i = 0; i < lp; i++)
        if (memchr("^$*+?.([%-", p[i], 10))
            return true;
    return false;
}

static int find_or_match(lua_State *L, bool find)
{
    size_t ls, lp;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    size_t init = start_offset(luaL_optinteger(L, 3, 1), ls);
    if (init > ls) {
        luaL_pushfail(L);
        return 1;
    }
    matchstate ms;
    ms_init(&ms, L, s, ls);
    if (find && (lua_toboolean(L, 4) || !has_specials(p, lp))) {
        /* plain search (memmem is linear) */
        charge_bulk(&ms, lp);
        const char *hit = memmem(s + init, ls - init, p, lp);
        charge_bulk(&ms, (size_t)((hit ? hit + lp : ms.end) - (s + init)));
        if (!hit) {
            luaL_pushfail(L);
            return 1;
        }
        lua_pushinteger(L, (hit - s) + 1);
        lua_pushinteger(L, (lua_Integer)((hit - s) + lp));
        return 2;
    }
    bool anchor = lp > 0 && *p == '^';
    if (anchor) {
        p++;
        lp--;
    }
    stack_room room;
    const node *prog = compile_here(&ms, &room, p, lp);
    const char *start = s + init;
    do {
        if (!anchor && (start = next_start(&ms, prog, start)) > ms.end)
            break;
        const char *e = run(&ms, start, prog);
        if (e) {
            if (!find)
                return push_captures(&ms, start, e);
            lua_pushinteger(L, (start - s) + 1);
            lua_pushinteger(L, e - s);
            return push_captures(&ms, NULL, NULL) + 2;
        }
    } while (start++ < ms.end && !anchor);
    luaL_pushfail(L);
    return 1;
}

static int pat_find(lua_State *L)
{
    return find_or_match(L, true);
}

static int pat_match(lua_State *L)
{
    return find_or_match(L, false);
}

/* gmatch's iterator state: where the next search starts, where the last
 * match ended (an empty match there is skipped, 6.4.1's gsub/gmatch rule),
 * then the compiled program. */
typedef struct {
    size_t pos, last;       /* offsets; last == SIZE_MAX: no match yet */
    node nodes[];           /* then the sets and the literal bytes */
} gmatch_state;

static int gmatch_next(lua_State *L)
{
    size_t ls;
    const char *s = lua_tolstring(L, lua_upvalueindex(2), &ls);
    gmatch_state *gm = lua_touserdata(L, lua_upvalueindex(3));
    matchstate ms;
    ms_init(&ms, L, s, ls);
    for (const char *src = s + gm->pos; src <= ms.end; src++) {
        if ((src = next_start(&ms, gm->nodes, src)) > ms.end)
            break;
        const char *e = run(&ms, src, gm->nodes);
        if (e && (size_t)(e - s) != gm->last) {
            gm->pos = gm->last = (size_t)(e - s);
            return push_captures(&ms, src, e);
        }
    }
    gm->pos = ls + 1;       /* exhausted: later calls return nothing at once */
    return 0;
}

static int pat_gmatch(lua_State *L)
{
    size_t ls, lp;
    luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    size_t init = start_offset(luaL_optinteger(L, 3, 1), ls);
    lua_settop(L, 2);
    matchstate ms;
    ms_init(&ms, L, "", 0);
    /* no anchor: 6.4 says a '^' does not anchor gmatch (it is literal) */
    program pr = {.nodes = NULL};
    charge(&ms, (long)lp);
    compile(&pr, p, lp);        /* counts only */
    gmatch_state *gm = lua_newuserdatauv(L, sizeof *gm + program_bytes(&pr), 0);
    gm->pos = init > ls ? ls + 1 : init;
    gm->last = SIZE_MAX;
    compile_into(&pr, gm->nodes, p, lp);
    lua_pushvalue(L, lua_upvalueindex(1));      /* the budget */
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 3);
    lua_pushcclosure(L, gmatch_next, 3);
    return 1;
}

/* Appends the replacement string (argument 3) for the match s..e: '%%' is
 * '%', '%0' the match, '%1'-'%9' a capture; any other '%' is an error. */
static void add_string_replacement(matchstate *ms, luaL_Buffer *b, const char *s, const char *e)
{
    size_t lr;
    const char *r = lua_tolstring(ms->L, 3, &lr);
    const char *end = r + lr;
    if (lr >= LOOP_BYTES_PER_STEP)
        charge_loop(ms, lr);
    while (r < end) {
        const char *pct = memchr(r, '%', (size_t)(end - r));
        if (!pct) {
            luaL_addlstring(b, r, (size_t)(end - r));
            break;
        }
        luaL_addlstring(b, r, (size_t)(pct - r));
        unsigned char d = pct + 1 < end ? (unsigned char)pct[1] : 0;
        if (d == '%') {
            luaL_addchar(b, '%');
        } else if (d == '0') {
            charge_loop(ms, (size_t)(e - s));
            luaL_addlstring(b, s, (size_t)(e - s));
        } else if (d >= '1' && d <= '9') {
            push_capture(ms, d - '1', s, e);
            charge_loop(ms, lua_rawlen(ms->L, -1));   /* 0 for a position */
            luaL_addvalue(b);       /* a position capture is an integer: as text */
        } else {
            luaL_error(ms->L, "invalid use of '%c' in replacement string", '%');
        }
        r = pct + 2;
    }
}

/* Appends the replacement for the match s..e. */
static void add_replacement(matchstate *ms, luaL_Buffer *b, const char *s, const char *e, int type)
{
    lua_State *L = ms->L;
    if (type == LUA_TFUNCTION) {
        lua_pushvalue(L, 3);
        int n = push_captures(ms, s, e);
        lua_call(L, n, 1);
    } else if (type == LUA_TTABLE) {
        push_capture(ms, 0, s, e);
        lua_gettable(L, 3);
    } else {
        add_string_replacement(ms, b, s, e);
        return;
    }
    if (!lua_toboolean(L, -1)) {        /* nil or false: keep the match */
        lua_pop(L, 1);
        luaL_addlstring(b, s, (size_t)(e - s));
    } else if (!lua_isstring(L, -1)) {
        luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
    } else {
        luaL_addvalue(b);
    }
}

static int pat_gsub(lua_State *L)
{
    size_t ls, lp;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    int type = lua_type(L, 3);
    lua_Integer max_n = luaL_optinteger(L, 4, (lua_Integer)ls + 1);
    luaL_argexpected(L, type == LUA_TNUMBER || type == LUA_TSTRING || type == LUA_TFUNCTION ||
                     type == LUA_TTABLE, 3, "string/function/table");
    bool anchor = lp > 0 && *p == '^';
    if (anchor) {
        p++;
        lp--;
    }
    matchstate ms;
    ms_init(&ms, L, s, ls);
    stack_room room;
    const node *prog = compile_here(&ms, &room, p, lp);   /* before the buffer */
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    const char *src = s, *last = NULL;
    lua_Integer n = 0;
    while (n < max_n) {
        if (!anchor) {
            const char *next = next_start(&ms, prog, src);
            if (next > ms.end)
                break;
            if (next - src >= LOOP_BYTES_PER_STEP)
                charge_loop(&ms, (size_t)(next - src));
            luaL_addlstring(&b, src, (size_t)(next - src));
            src = next;
        }
        const char *e = run(&ms, src, prog);
        if (e && e != last) {
            n++;
            add_replacement(&ms, &b, src, e, type);
            src = last = e;
        } else if (src < ms.end) {
            luaL_addchar(&b, *src++);
        } else {
            break;
        }
        if (anchor)
            break;
    }
    charge_loop(&ms, (size_t)(ms.end - src));
    luaL_addlstring(&b, src, (size_t)(ms.end - src));
    luaL_pushresult(&b);
    lua_pushinteger(L, n);
    return 2;
}

void pattern_match_open(lua_State *L, long *steps_left)
{
    static const luaL_Reg fns[] = {
        {"find", pat_find}, {"match", pat_match}, {"gmatch", pat_gmatch}, {"gsub", pat_gsub},
        {NULL, NULL},
    };
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_getfield(L, -1, LUA_STRLIBNAME);
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        lua_getglobal(L, LUA_STRLIBNAME);
    }
    if (lua_istable(L, -1)) {
        lua_pushlightuserdata(L, steps_left);
        luaL_setfuncs(L, fns, 1);
    }
    lua_pop(L, 2);
}
