-- /etc/smartshop/broker.lua: the settings of smartshop-broker when it runs
-- as the system service (smartshop-broker.service). Every flag of
-- `smartshop-broker --help` can be set here, with '_' for '-'; a flag given
-- on the command line wins over this file.
--
-- After editing: `systemctl restart smartshop-broker` (a new policy only
-- needs `systemctl reload smartshop-broker`, or just saving the file).
-- An upgrade never overwrites this file once you have edited it: the
-- package keeps yours and leaves the new shipped version beside it as
-- broker.lua.dpkg-dist (install_broker.sh without dpkg: broker.lua.dist).

-- Where services and clients connect. Loopback only by default; to accept
-- other machines, bind a routable address and turn CURVE on (see
-- docs/security.md): without it, anyone who reaches the port can register
-- any name.
endpoints = { "tcp://127.0.0.1:5555" }

-- The routing policy: edit it on the live broker; a saved change reloads
-- within a second, a broken one is refused (see the journal).
policy = "/etc/smartshop/policies/routing.lua"

-- Lua services the broker hosts, one file each (none as installed; the
-- demo echo.lua and inventory.lua are in
-- /usr/share/doc/smartshop-broker/examples/services/: copy one here to run it).
services = "/etc/smartshop/services"

-- error, warn, info or debug. Logs go to the journal:
--   journalctl -u smartshop-broker -f
log_level = "info"

-- HTTP (off unless set): Prometheus metrics at http://127.0.0.1:8555/metrics,
-- /healthz, /readyz, and the dashboard at http://127.0.0.1:8555/
-- (docs/operations.md, "HTTP endpoints and the dashboard"). No
-- authentication: keep it on loopback or a monitoring network.
-- metrics = "tcp://127.0.0.1:8555"

-- CURVE encryption and authentication (docs/security.md); the secret key
-- file must belong to the user smartshop, mode 600:
-- curve_secret_key = "/etc/smartshop/broker.key"
-- curve_allow = "/etc/smartshop/clients.allow"

-- The durable state: registrations, dead letters and the last good policy
-- survive a restart (docs/operations.md, "The state directory"). Under
-- systemd it is /var/lib/smartshop (StateDirectory=); "" keeps nothing.
-- state_dir = "/var/lib/smartshop"
-- After a restart, how long a restored registration waits for its peer:
-- restore_grace_ms = 30000
-- A policy file that does not load at start: run its last good version
-- (false, with a loud warning) or refuse to start (true, exit 2):
-- strict_policy = false

-- Limits (the defaults shown):
-- max_message_bytes = 1048576
-- request_timeout_ms = 30000
-- shutdown_grace_ms = 2000
-- The bounds that give each peer a share (docs/security.md, "Every bound,
-- in one table"); 0 for the byte bounds means "derived from
-- max_message_bytes", as --help says:
-- max_inflight = 100000
-- max_inflight_per_peer = 0
-- max_inflight_per_instance = 0
-- max_unread_bytes = 0
-- max_unread_bytes_total = 0
-- max_queued_bytes = 0
-- max_queued_bytes_total = 268435456
-- max_subscriptions_per_peer = 256
-- max_subscriptions = 100000
-- dead_letters = 1000
-- dead_letter_bytes = 16777216
-- dead_letter_share = 8
-- metrics_max_series = 1000
-- metrics_max_connections = 16
-- metrics_idle_timeout_ms = 10000
-- metrics_max_request_bytes = 8192
