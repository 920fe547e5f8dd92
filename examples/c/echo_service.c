/* echo_service: the seed's echo service in C. Answers every request with
 * its own payload.  Run: echo_service [tcp://127.0.0.1:5555] */
#include <signal.h>
#include <stdio.h>
#include <smartshop.h>

static ss_client_t *bus;

static cJSON *echo(ss_client_t *c, const ss_msg_t *req, ss_error_t *err, void *arg)
{
    printf("request %s from %s\n", ss_msg_action(req), ss_msg_src(req));
    return cJSON_Duplicate(ss_msg_payload(req), 1);
}

static void stop(int sig) { ss_client_stop(bus); }

int main(int argc, char **argv)
{
    bus = ss_client_new(argc > 1 ? argv[1] : "tcp://127.0.0.1:5555", NULL);
    if (!bus || ss_register(bus, "echo-service", 5000) != SS_OK) {
        fprintf(stderr, "echo_service: cannot register: %s\n", bus ? ss_last_error(bus)->message : "no client");
        return 1;
    }
    signal(SIGINT, stop);
    signal(SIGTERM, stop);
    ss_handle(bus, NULL, echo, NULL);
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("echo-service ready\n");
    ss_client_run(bus);
    ss_client_destroy(&bus);
    return 0;
}
