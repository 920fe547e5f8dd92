/* state_keepers: the registry's and the dead letters' keepers on the
 * state file. The registry and the dead letters know no file: they tell
 * a keeper (registry_keeper_t, deadletters_keeper_t) what changed, and
 * these hand it to state.c, written behind by its thread. */
#ifndef SMARTSHOP_STATE_KEEPERS_H
#define SMARTSHOP_STATE_KEEPERS_H

#include "deadletter.h"
#include "registry.h"
#include "state.h"

/* Keepers writing to `st` (which must outlive their use). */
registry_keeper_t state_registry_keeper(state_t *st);
deadletters_keeper_t state_letters_keeper(state_t *st);

#endif
