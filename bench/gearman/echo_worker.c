/* gearmand baseline, worker side: registers the function "echo", which hands
 * back its payload unchanged. One job at a time; exits when the connection to
 * gearmand fails.
 *
 *   echo_worker HOST PORT
 */
#include <libgearman/gearman.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *echo(gearman_job_st *job, void *unused, size_t *size, gearman_return_t *rc) {
  (void)unused;
  size_t n = gearman_job_workload_size(job);
  char *copy = malloc(n + 1);   /* libgearman frees the result */
  if (!copy) { *rc = GEARMAN_WORK_FAIL; return NULL; }
  memcpy(copy, gearman_job_workload(job), n);
  *size = n;
  *rc = GEARMAN_SUCCESS;
  return copy;
}

int main(int argc, char **argv) {
  if (argc != 3) { fprintf(stderr, "usage: %s HOST PORT\n", argv[0]); return 2; }
  gearman_worker_st *w = gearman_worker_create(NULL);
  if (!w) { fprintf(stderr, "echo_worker: out of memory\n"); return 1; }
  if (gearman_worker_add_server(w, argv[1], (in_port_t)atoi(argv[2])) != GEARMAN_SUCCESS ||
      gearman_worker_add_function(w, "echo", 0, echo, NULL) != GEARMAN_SUCCESS) {
    fprintf(stderr, "echo_worker: %s\n", gearman_worker_error(w));
    return 1;
  }
  gearman_return_t rc;
  while ((rc = gearman_worker_work(w)) == GEARMAN_SUCCESS) {}
  fprintf(stderr, "echo_worker: stopping: %s\n", gearman_worker_error(w));
  gearman_worker_free(w);
  return 0;
}
