/* registry: peers, names, instances, round-robin, descriptors. */
#include "check.h"
#include "registry.h"

static void registers_and_round_robins(void)
{
    registry_t *reg = registry_new();
    peer_t *a = registry_add_peer(reg, "a", 1, PEER_REMOTE, 5);
    peer_t *b = registry_add_peer(reg, "b", 1, PEER_REMOTE, 6);
    CHECK_EQ_INT(registry_register(reg, a, "echo", 4), 0);
    CHECK_EQ_INT(registry_register(reg, a, "echo", 4), 1);   /* idempotent */
    CHECK_EQ_INT(registry_register(reg, b, "echo", 4), 0);
    CHECK_EQ_INT(registry_register(reg, a, "other", 5), 0);
    service_t *svc = registry_find_service(reg, "echo", 4);
    CHECK(svc && svc->count == 2);
    int got_a = 0, got_b = 0;
    for (int i = 0; i < 10; i++) {
        peer_t *p = service_next_instance(svc);
        got_a += p == a;
        got_b += p == b;
    }
    CHECK_EQ_INT(got_a, 5);
    CHECK_EQ_INT(got_b, 5);
    CHECK_EQ_INT(registry_registered_count(reg), 2);
    CHECK(peer_holds(a, "other", 5) && !peer_holds(b, "other", 5));
    registry_free(&reg);
    CHECK(reg == NULL);
}

static void unregisters_and_removes(void)
{
    registry_t *reg = registry_new();
    peer_t *a = registry_add_peer(reg, "a", 1, PEER_REMOTE, 5);
    registry_register(reg, a, "x", 1);
    registry_register(reg, a, "y", 1);
    CHECK_EQ_INT(registry_unregister(reg, a, "z", 1), -1);
    CHECK_EQ_INT(registry_unregister(reg, a, "x", 1), 0);
    CHECK(registry_find_service(reg, "x", 1) == NULL);
    CHECK(registry_find_service(reg, "y", 1) != NULL);
    CHECK(registry_peer_on_fd(reg, 5) == a);
    registry_remove_peer(reg, &a);
    CHECK(a == NULL);
    CHECK(registry_find_service(reg, "y", 1) == NULL);
    CHECK(registry_peer_on_fd(reg, 5) == NULL);
    CHECK(registry_find_peer(reg, "a", 1) == NULL);
    CHECK_EQ_INT(registry_peer_count(reg), 0);
    CHECK_EQ_INT(registry_registered_count(reg), 0);
    registry_free(&reg);
}

static void tracks_descriptors(void)
{
    registry_t *reg = registry_new();
    peer_t *a = registry_add_peer(reg, "a", 1, PEER_REMOTE, 1000);
    CHECK(registry_peer_on_fd(reg, 1000) == a);
    registry_set_fd(reg, a, 7);
    CHECK(registry_peer_on_fd(reg, 1000) == NULL);
    CHECK(registry_peer_on_fd(reg, 7) == a);
    CHECK(!registry_fd_take_stale(reg, 7));
    registry_fd_mark_stale(reg, 7);
    CHECK(registry_fd_take_stale(reg, 7));
    CHECK(!registry_fd_take_stale(reg, 7));
    CHECK(registry_add_peer(reg, "", 0, PEER_REMOTE, -1) == NULL);
    registry_free(&reg);
}

int main(void)
{
    registers_and_round_robins();
    unregisters_and_removes();
    tracks_descriptors();
    return check_done("registry");
}
