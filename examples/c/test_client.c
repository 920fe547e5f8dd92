/* test_client: sends one request to echo-service and prints the answer.
 * Run: test_client [tcp://127.0.0.1:5555]   Exit 0 on a response. */
#include <stdio.h>
#include <stdlib.h>
#include <smartshop.h>

int main(int argc, char **argv)
{
    ss_client_t *bus = ss_client_new(argc > 1 ? argv[1] : "tcp://127.0.0.1:5555", NULL);
    if (!bus)
        return 1;
    cJSON *payload = cJSON_Parse("{\"hello\": \"world\"}"), *response = NULL;
    int rc = ss_request(bus, "echo-service", "echo", payload, 5000, &response);
    if (rc == SS_OK) {
        char *text = cJSON_PrintUnformatted(response);
        printf("response: %s\n", text);
        free(text);
    } else {
        fprintf(stderr, "test_client: %s: %s %s\n", ss_strerror(rc), ss_last_error(bus)->code,
                ss_last_error(bus)->message);
    }
    cJSON_Delete(payload);
    cJSON_Delete(response);
    ss_client_destroy(&bus);
    return rc == SS_OK ? 0 : 1;
}
