/* state_keepers: registrations and dead letters into the state file. See
 * state_keepers.h. */
#include "state_keepers.h"

#include "errors.h"

static void put_registration(void *ctx, const peer_t *peer, const char *name)
{
    state_registration_t row = {.identity = peer->id, .identity_len = peer->id_len,
                                .name = name, .key = peer->key, .delimiter = peer->delimiter};
    state_put_registration(ctx, &row);
}

static void del_registration(void *ctx, const peer_t *peer, const char *name)
{
    state_del_registration(ctx, peer->id, peer->id_len, name);
}

static void put_letter(void *ctx, const deadletter_t *d)
{
    state_letter_t row = {.id = d->id, .at = d->at, .code = bus_err_name(d->code),
                          .sender = d->from, .sender_len = d->from_len, .msg_id = d->msg_id,
                          .src = d->src, .dst = d->dst, .action = d->action,
                          .bytes = d->bytes, .len = d->len};
    state_put_letter(ctx, &row);
}

static void del_letter(void *ctx, uint64_t id)
{
    state_del_letter(ctx, id);
}

registry_keeper_t state_registry_keeper(state_t *st)
{
    return (registry_keeper_t){st, put_registration, del_registration};
}

deadletters_keeper_t state_letters_keeper(state_t *st)
{
    return (deadletters_keeper_t){st, put_letter, del_letter};
}
