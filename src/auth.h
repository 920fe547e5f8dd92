/* auth: who may be on the bus (docs/security.md).
 *
 * Owns the broker's CURVE key pair, the allow list (which client public
 * keys may connect, and which names each may register), the ZAP handler
 * that libzmq asks at every CURVE handshake, and key generation. Reads
 * key files only if nobody else can (0600), like ssh. Plain mode (no
 * CURVE) needs none of this. */
#ifndef SMARTSHOP_AUTH_H
#define SMARTSHOP_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#define AUTH_KEY_LEN 40          /* a CURVE key in Z85 text */

typedef struct auth auth_t;

/* Loads the broker's secret key file and the allow list. Returns NULL with
 * a one-line reason (naming the file and line) in `err`. */
auth_t *auth_load(const char *secret_key_path, const char *allow_path, char *err, size_t errlen);
void auth_free(auth_t **self_p);

/* Binds the ZAP handler in `zmq_ctx` and makes `router` a CURVE server.
 * Call before the router binds. Returns 0, or -1 with `err`. */
int auth_start(auth_t *a, void *zmq_ctx, void *router, char *err, size_t errlen);

/* Answers every ZAP request waiting (never blocks). */
void auth_handle_zap(auth_t *a);

/* The ZAP socket auth_start bound (for the event loop's poll), or NULL. */
void *auth_zap_socket(const auth_t *a);

/* Closes the ZAP socket (before the context terminates); auth_free would
 * close it too. */
void auth_stop(auth_t *a);

/* True if the allow list marks `key` "@admin": it may use the broker's
 * operator actions (reload_policy, dead_letters, replay, watch). */
bool auth_is_admin(const auth_t *a, const char *key);

/* True if `key` (Z85) may register `name`. */
bool auth_may_register(const auth_t *a, const char *key, const char *name);

/* With `topic:PATTERN` entries on its line, a key may publish only topics
 * one of them matches and subscribe only to patterns within one of them
 * (docs/security.md); a key without any may use every topic. */
bool auth_may_publish(const auth_t *a, const char *key, const char *topic, size_t len);
bool auth_may_subscribe(const auth_t *a, const char *key, const char *pattern);

/* Writes PREFIX.key (secret, 0600) and PREFIX.pub (public, 0644); refuses
 * to overwrite. Returns 0, or -1 with `err`. */
int auth_keygen(const char *prefix, char *err, size_t errlen);

/* How many client keys the allow list names. */
int auth_key_count(const auth_t *a);

/* Reads the allow list at `path` again (config reload); on success it
 * replaces the one in force for every check from now on (connections
 * already accepted stay). Returns 0, or -1 with `err` (nothing changed). */
int auth_reload_allow(auth_t *a, const char *path, char *err, size_t errlen);

/* True if a tcp endpoint's host is not loopback (for the plain-mode warning). */
bool auth_endpoint_is_public(const char *endpoint);

#endif
