/* registry: peers, services and their instances. See registry.h. */
#include "registry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What the registry knows of one connection descriptor. */
typedef struct {
    peer_t *peer;              /* the peer last seen on it */
    unsigned stale;            /* disconnect events still to come for connections
                                  already known dead (see registry_fd_mark_stale) */
} fd_slot_t;

struct registry {
    peer_t *peers;             /* remote connections, by routing identity */
    peer_t *hosted;            /* hosted Lua services, by their own id (never
                                  looked up with an identity from the wire) */
    service_t *services;       /* by name */
    fd_slot_t *fds;            /* by connection descriptor */
    int fd_cap;
    int peer_count;            /* remote connections */
    int hosted_count;
    int registered_peer_count; /* peers holding at least one name */
    uint64_t generation;       /* bumped by every change to services (registry_generation) */
    uint64_t hosted_removals;  /* hosted peers removed so far (registry_hosted_removals) */
    int restored_count;        /* peers still `restored` */
    const registry_keeper_t *keeper; /* where remote registrations are kept, or NULL */
    uint64_t serials;          /* peers added so far: the next one's serial */
};

registry_t *registry_new(void)
{
    return calloc(1, sizeof(registry_t));
}

void registry_free(registry_t **self_p)
{
    registry_t *reg = *self_p;
    if (!reg)
        return;
    reg->keeper = NULL;         /* the names freed here stay kept */
    peer_t *peer, *tmp;
    HASH_ITER(hh, reg->peers, peer, tmp) {
        peer_t *p = peer;
        registry_remove_peer(reg, &p);
    }
    HASH_ITER(hh, reg->hosted, peer, tmp) {
        peer_t *p = peer;
        registry_remove_peer(reg, &p);
    }
    free(reg->fds);
    free(reg);
    *self_p = NULL;
}

peer_t *registry_find_peer(registry_t *reg, const void *id, size_t id_len)
{
    peer_t *peer = NULL;
    HASH_FIND(hh, reg->peers, id, id_len, peer);
    return peer;
}

peer_t *registry_find_hosted(registry_t *reg, const void *id, size_t id_len)
{
    peer_t *peer = NULL;
    HASH_FIND(hh, reg->hosted, id, id_len, peer);
    return peer;
}

peer_t *registry_find_instance(registry_t *reg, const char *name, size_t len,
                               const void *id, size_t id_len)
{
    service_t *svc = registry_find_service(reg, name, len);
    for (int i = 0; svc && i < svc->count; i++) {
        peer_t *peer = svc->instances[i];
        if (peer->id_len == id_len && memcmp(peer->id, id, id_len) == 0)
            return peer;
    }
    return NULL;
}

peer_t *registry_next_peer(registry_t *reg, const peer_t *peer)
{
    if (!peer)
        return reg->peers ? reg->peers : reg->hosted;
    peer_t *next = peer->hh.next;
    if (!next && peer->kind == PEER_REMOTE)
        next = reg->hosted;
    return next;
}

/* Makes room for descriptor `fd`. Returns false on allocation failure. */
static bool fd_reserve(registry_t *reg, int fd)
{
    if (fd < reg->fd_cap)
        return true;
    int cap = reg->fd_cap ? reg->fd_cap : 64;
    while (cap <= fd)
        cap *= 2;
    fd_slot_t *grown = realloc(reg->fds, (size_t)cap * sizeof *grown);
    if (!grown)
        return false;
    memset(grown + reg->fd_cap, 0, (size_t)(cap - reg->fd_cap) * sizeof *grown);
    reg->fds = grown;
    reg->fd_cap = cap;
    return true;
}

peer_t *registry_peer_on_fd(registry_t *reg, int fd)
{
    if (fd < 0 || fd >= reg->fd_cap)
        return NULL;
    return reg->fds[fd].peer;
}

void registry_set_fd(registry_t *reg, peer_t *peer, int fd)
{
    if (peer->fd >= 0 && peer->fd < reg->fd_cap && reg->fds[peer->fd].peer == peer)
        reg->fds[peer->fd].peer = NULL;
    peer->fd = -1;
    if (fd < 0 || !fd_reserve(reg, fd))
        return;
    peer->fd = fd;
    reg->fds[fd].peer = peer;
}

void registry_fd_mark_stale(registry_t *reg, int fd)
{
    if (fd >= 0 && fd_reserve(reg, fd))
        reg->fds[fd].stale++;
}

bool registry_fd_take_stale(registry_t *reg, int fd)
{
    if (fd < 0 || fd >= reg->fd_cap || reg->fds[fd].stale == 0)
        return false;
    reg->fds[fd].stale--;
    return true;
}

peer_t *registry_add_peer(registry_t *reg, const void *id, size_t id_len,
                          peer_kind_t kind, int fd)
{
    if (id_len == 0 || id_len > PEER_ID_MAX)
        return NULL;
    peer_t *peer = calloc(1, sizeof *peer);
    if (!peer)
        return NULL;
    memcpy(peer->id, id, id_len);
    peer->id_len = (uint8_t)id_len;
    peer->kind = kind;
    peer->fd = -1;
    peer->serial = ++reg->serials;
    if (kind == PEER_LUA) {
        HASH_ADD(hh, reg->hosted, id, id_len, peer);
        reg->hosted_count++;
        return peer;                /* in-process: no descriptor */
    }
    HASH_ADD(hh, reg->peers, id, id_len, peer);
    reg->peer_count++;
    registry_set_fd(reg, peer, fd);
    return peer;
}

static void service_drop_instance(registry_t *reg, service_t *svc, peer_t *peer)
{
    for (int i = 0; i < svc->count; i++) {
        if (svc->instances[i] != peer)
            continue;
        memmove(&svc->instances[i], &svc->instances[i + 1],
                (size_t)(svc->count - i - 1) * sizeof *svc->instances);
        svc->count--;
        break;
    }
    if (svc->count == 0) {
        HASH_DEL(reg->services, svc);
        free(svc->instances);
        free(svc);
    }
}

void registry_remove_peer(registry_t *reg, peer_t **peer_p)
{
    peer_t *peer = *peer_p;
    if (!peer)
        return;
    while (peer->name_count > 0) {
        const char *name = peer->names[peer->name_count - 1];
        registry_unregister(reg, peer, name, strlen(name));
    }
    if (peer->restored)
        reg->restored_count--;
    if (peer->kind == PEER_LUA) {
        HASH_DEL(reg->hosted, peer);
        reg->hosted_count--;
        reg->hosted_removals++;
    } else {
        registry_set_fd(reg, peer, -1);
        HASH_DEL(reg->peers, peer);
        reg->peer_count--;
    }
    free(peer->names);
    free(peer);
    *peer_p = NULL;
}

bool peer_holds(const peer_t *peer, const char *name, size_t len)
{
    for (int i = 0; i < peer->name_count; i++)
        if (name_equals(name, len, peer->names[i]))
            return true;
    return false;
}

service_t *registry_find_service(registry_t *reg, const char *name, size_t len)
{
    service_t *svc = NULL;
    HASH_FIND(hh, reg->services, name, len, svc);
    return svc;
}

int registry_register(registry_t *reg, peer_t *peer, const char *name, size_t len)
{
    if (len > NAME_MAX_LEN)
        return -1;
    if (peer_holds(peer, name, len))
        return 1;
    service_t *svc = registry_find_service(reg, name, len);
    if (!svc) {
        svc = calloc(1, sizeof *svc);
        if (!svc)
            return -1;
        memcpy(svc->name, name, len);
        HASH_ADD(hh, reg->services, name[0], len, svc);
    }
    if (svc->count == svc->cap) {
        int cap = svc->cap ? svc->cap * 2 : 4;
        peer_t **grown = realloc(svc->instances, (size_t)cap * sizeof *grown);
        if (!grown)
            goto fail;
        svc->instances = grown;
        svc->cap = cap;
    }
    if (peer->name_count == peer->name_cap) {
        int cap = peer->name_cap ? peer->name_cap * 2 : 2;
        char (*grown)[NAME_MAX_LEN + 1] = realloc(peer->names, (size_t)cap * sizeof *grown);
        if (!grown)
            goto fail;
        peer->names = grown;
        peer->name_cap = cap;
    }
    svc->instances[svc->count++] = peer;
    memcpy(peer->names[peer->name_count], name, len);
    peer->names[peer->name_count][len] = '\0';
    if (peer->name_count++ == 0)
        reg->registered_peer_count++;
    reg->generation++;
    if (reg->keeper && peer->kind == PEER_REMOTE && peer->id[0] != 0)
        reg->keeper->put(reg->keeper->ctx, peer, peer->names[peer->name_count - 1]);
    return 0;
fail:
    if (svc->count == 0) {
        HASH_DEL(reg->services, svc);
        free(svc->instances);
        free(svc);
    }
    return -1;
}

int registry_unregister(registry_t *reg, peer_t *peer, const char *name, size_t len)
{
    int at = -1;
    for (int i = 0; i < peer->name_count; i++)
        if (name_equals(name, len, peer->names[i]))
            at = i;
    if (at < 0)
        return -1;
    service_t *svc = registry_find_service(reg, name, len);
    if (svc)
        service_drop_instance(reg, svc, peer);
    if (reg->keeper && peer->kind == PEER_REMOTE && peer->id[0] != 0)
        reg->keeper->del(reg->keeper->ctx, peer, peer->names[at]);
    /* `name` may point into peer->names: it is not read after this move */
    memmove(&peer->names[at], &peer->names[at + 1],
            (size_t)(peer->name_count - at - 1) * sizeof *peer->names);
    if (--peer->name_count == 0)
        reg->registered_peer_count--;
    reg->generation++;
    return 0;
}

peer_t *service_next_instance(service_t *svc)
{
    if (!svc || svc->count == 0)
        return NULL;
    peer_t *peer = svc->instances[svc->next % (unsigned)svc->count];
    svc->next++;
    return peer;
}

uint64_t registry_hosted_removals(const registry_t *reg)
{
    return reg->hosted_removals;
}

uint64_t registry_generation(const registry_t *reg)
{
    return reg->generation;
}

void registry_set_keeper(registry_t *reg, const registry_keeper_t *keeper)
{
    reg->keeper = keeper;
}

peer_t *registry_restore(registry_t *reg, const void *id, size_t id_len, const char *key,
                         bool delimiter, const char *name)
{
    size_t len = strlen(name);
    if (id_len == 0 || id_len > PEER_ID_MAX || strlen(key) >= sizeof ((peer_t *)0)->key ||
        !name_is_valid(name, len))
        return NULL;
    peer_t *peer = registry_find_peer(reg, id, id_len);
    if (peer && strcmp(peer->key, key) != 0)
        return NULL;
    if (!peer) {
        if (!(peer = registry_add_peer(reg, id, id_len, PEER_REMOTE, -1)))
            return NULL;
        snprintf(peer->key, sizeof peer->key, "%s", key);
        peer->delimiter = delimiter;
        peer->restored = true;
        reg->restored_count++;
    }
    const registry_keeper_t *keeper = reg->keeper;
    reg->keeper = NULL;         /* read from the file: nothing to write back */
    int rc = registry_register(reg, peer, name, len);
    reg->keeper = keeper;
    if (rc < 0 && peer->name_count == 0) {
        registry_remove_peer(reg, &peer);
        return NULL;
    }
    return peer;
}

size_t registry_restored_count(const registry_t *reg)
{
    return (size_t)reg->restored_count;
}

void registry_adopt(registry_t *reg, peer_t *peer)
{
    if (!peer->restored)
        return;
    peer->restored = false;
    reg->restored_count--;
}

static int by_name(const service_t *a, const service_t *b)
{
    return strcmp(a->name, b->name);
}

void registry_sort_services(registry_t *reg)
{
    HASH_SORT(reg->services, by_name);
}

service_t *registry_next_service(registry_t *reg, const service_t *svc)
{
    return svc ? svc->hh.next : reg->services;
}

size_t registry_peer_count(const registry_t *reg)
{
    return (size_t)reg->peer_count;
}

size_t registry_service_count(const registry_t *reg)
{
    return HASH_COUNT(reg->services);
}

size_t registry_registered_count(const registry_t *reg)
{
    return (size_t)reg->registered_peer_count;
}
