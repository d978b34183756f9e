/* gearmand baseline, client side: the load generator of bench/gearman/run.sh.
 * Every job goes to the function "echo" (bench/gearman/echo_worker.c) with a
 * short payload "job-<i>"; every foreground answer is checked against it.
 *
 *   load_client HOST PORT tput N WINDOW [batch]
 *                                        foreground jobs, a sliding window of
 *                                        WINDOW in flight; one line with jobs/s
 *   load_client HOST PORT lat N          N jobs one after the other; one line
 *                                        with p50, p90, p99 and mean in us
 *   load_client HOST PORT bg N WINDOW [batch]
 *                                        background jobs, WINDOW unacknowledged
 *                                        at most; accept rate (until each got
 *                                        JOB_CREATED) and complete rate (first
 *                                        submission until gearmand reports no
 *                                        "echo" job queued or running)
 *   load_client HOST PORT workers K      waits until K workers can do "echo"
 *
 * With "batch", tput and bg send WINDOW jobs, then none until all of those
 * are answered (tput) or acknowledged (bg), instead of refilling the window.
 *
 * Exits non-zero on any error, wrong answer, or after 120 s of waiting. */
#include <libgearman/gearman.h>
#include <arpa/inet.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define FUNC "echo"
#define GIVE_UP_S 120.0

static const char *host;
static int port;

static double seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const char *what, gearman_client_st *c) {
  fprintf(stderr, "load_client: %s: %s\n", what, c ? gearman_client_error(c) : "failed");
  exit(1);
}

/* ---- payloads ---- */
static char **payloads;
static void make_payloads(long n) {
  payloads = calloc((size_t)n, sizeof *payloads);
  if (!payloads) die("payloads", NULL);
  for (long i = 0; i < n; i++) {
    char buf[32];
    int len = snprintf(buf, sizeof buf, "job-%ld", i);
    payloads[i] = malloc((size_t)len + 1);
    if (!payloads[i]) die("payloads", NULL);
    memcpy(payloads[i], buf, (size_t)len + 1);
  }
}

static gearman_client_st *connect_client(int non_blocking) {
  gearman_client_st *c = gearman_client_create(NULL);
  if (!c) die("gearman_client_create", NULL);
  if (gearman_client_add_server(c, host, (in_port_t)port) != GEARMAN_SUCCESS) die("add_server", c);
  gearman_client_set_timeout(c, (int)(GIVE_UP_S * 1000));
  if (non_blocking) gearman_client_add_options(c, GEARMAN_CLIENT_NON_BLOCKING | GEARMAN_CLIENT_FREE_TASKS);
  return c;
}

/* ---- callbacks of the task API ---- */
static long answered, wrong, acknowledged;

static gearman_return_t on_complete(gearman_task_st *t) {
  const char *sent = gearman_task_context(t);
  size_t n = gearman_task_data_size(t);
  if (n != strlen(sent) || memcmp(gearman_task_data(t), sent, n) != 0) wrong++;
  answered++;
  return GEARMAN_SUCCESS;
}
static gearman_return_t on_fail(gearman_task_st *t) {
  (void)t;
  wrong++;
  answered++;
  return GEARMAN_SUCCESS;
}
static gearman_return_t on_created(gearman_task_st *t) {
  (void)t;
  acknowledged++;
  return GEARMAN_SUCCESS;
}

/* Keeps up to `window` jobs outstanding until `*finished` reaches n; a job is
 * outstanding from its submission until `*finished` counts it. With `batches`
 * it submits again only once nothing is outstanding. */
static void pump(gearman_client_st *c, long n, long window, int background, int batches,
                 const long *finished) {
  long next = 0;
  while (*finished < n) {
    while (next < n && next - *finished < window && (!batches || next % window || next == *finished)) {
      gearman_return_t rc;
      gearman_task_st *t = background
          ? gearman_client_add_task_background(c, NULL, payloads[next], FUNC, NULL,
                                               payloads[next], strlen(payloads[next]), &rc)
          : gearman_client_add_task(c, NULL, payloads[next], FUNC, NULL,
                                    payloads[next], strlen(payloads[next]), &rc);
      if (!t || rc != GEARMAN_SUCCESS) die("add_task", c);
      next++;
    }
    gearman_return_t rc = gearman_client_run_tasks(c);
    if (rc == GEARMAN_IO_WAIT) rc = gearman_client_wait(c);
    if (rc != GEARMAN_SUCCESS && rc != GEARMAN_IO_WAIT) die("run_tasks", c);
  }
}

/* ---- admin protocol: "status" lists FUNCTION\tTOTAL\tRUNNING\tWORKERS ---- */
static int admin_fd = -1;

static int admin_open(void) {
  struct sockaddr_in sa = {0};
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) return -1;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  struct timeval tv = {5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) { close(fd); return -1; }
  return fd;
}

/* Fills *total (jobs queued or running) and *workers for FUNC; 0 if unknown.
 * Returns -1 if gearmand did not answer. */
static int admin_status(long *total, long *workers) {
  static char reply[1 << 16];
  size_t len = 0;
  if (admin_fd < 0 && (admin_fd = admin_open()) < 0) return -1;
  if (write(admin_fd, "status\n", 7) != 7) goto broken;
  for (;;) {
    ssize_t got = read(admin_fd, reply + len, sizeof reply - 1 - len);
    if (got <= 0) goto broken;
    len += (size_t)got;
    reply[len] = 0;
    if ((len == 2 && !strcmp(reply, ".\n")) || (len >= 3 && !strcmp(reply + len - 3, "\n.\n"))) break;
    if (len == sizeof reply - 1) goto broken;
  }
  *total = *workers = 0;
  for (char *line = reply; *line; ) {
    char *eol = strchr(line, '\n');
    if (!eol) break;
    *eol = 0;
    long running;
    if (!strncmp(line, FUNC "\t", sizeof FUNC) &&
        sscanf(line + sizeof FUNC, "%ld\t%ld\t%ld", total, &running, workers) == 3)
      break;
    line = eol + 1;
  }
  return 0;
broken:
  close(admin_fd);
  admin_fd = -1;
  return -1;
}

/* Polls "status" every millisecond until done(total, workers) holds. */
static void wait_admin(int (*done)(long, long, long), long arg, const char *what) {
  double end = seconds() + GIVE_UP_S;
  long total, workers;
  while (seconds() < end) {
    if (admin_status(&total, &workers) == 0 && done(total, workers, arg)) return;
    usleep(1000);
  }
  fprintf(stderr, "load_client: gave up waiting for %s\n", what);
  exit(1);
}
static int queue_empty(long total, long workers, long unused) { (void)workers; (void)unused; return total == 0; }
static int enough_workers(long total, long workers, long k) { (void)total; return workers >= k; }

static int by_value(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}
static double percentile(const double *sorted, long n, double p) {
  long rank = (long)ceil(p * (double)n);
  return sorted[rank < 1 ? 0 : rank - 1];
}

int main(int argc, char **argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: %s HOST PORT tput|bg N WINDOW [batch] | lat N | workers K\n", argv[0]);
    return 2;
  }
  host = argv[1];
  port = atoi(argv[2]);
  const char *mode = argv[3];
  long n = atol(argv[4]);
  long window = argc > 5 ? atol(argv[5]) : 1;
  if (n < 1 || window < 1) { fprintf(stderr, "load_client: N and WINDOW must be positive\n"); return 2; }

  if (!strcmp(mode, "workers")) {
    wait_admin(enough_workers, n, "the workers");
    return 0;
  }
  make_payloads(n);

  int batches = argc > 6 && !strcmp(argv[6], "batch");
  if (!strcmp(mode, "tput")) {
    gearman_client_st *c = connect_client(1);
    gearman_client_set_complete_fn(c, on_complete);
    gearman_client_set_fail_fn(c, on_fail);
    double t0 = seconds();
    pump(c, n, window, 0, batches, &answered);
    double dt = seconds() - t0;
    printf("tput: %ld jobs in %.3f s = %.0f jobs/s (window %ld%s, wrong %ld)\n",
           answered, dt, (double)answered / dt, window, batches ? " in batches" : "", wrong);
    return wrong ? 1 : 0;
  }
  if (!strcmp(mode, "bg")) {
    gearman_client_st *c = connect_client(1);
    gearman_client_set_created_fn(c, on_created);
    double t0 = seconds();
    pump(c, n, window, 1, batches, &acknowledged);
    double accepted = seconds() - t0;
    wait_admin(queue_empty, 0, "the background jobs");
    double completed = seconds() - t0;
    printf("bg: accept %.0f jobs/s (%ld in %.3f s), complete %.0f jobs/s (%.3f s), window %ld\n",
           (double)n / accepted, acknowledged, accepted, (double)n / completed, completed, window);
    return 0;
  }
  if (!strcmp(mode, "lat")) {
    gearman_client_st *c = connect_client(0);
    double *us = malloc(sizeof *us * (size_t)n), sum = 0;
    if (!us) die("latencies", NULL);
    for (long i = 0; i < n; i++) {
      size_t got;
      gearman_return_t rc;
      size_t len = strlen(payloads[i]);
      double t0 = seconds();
      char *r = gearman_client_do(c, FUNC, NULL, payloads[i], len, &got, &rc);
      us[i] = (seconds() - t0) * 1e6;
      if (rc != GEARMAN_SUCCESS) die("do", c);
      if (got != len || memcmp(r, payloads[i], len) != 0) wrong++;
      free(r);
      sum += us[i];
    }
    qsort(us, (size_t)n, sizeof *us, by_value);
    printf("gearman latency: p50 %.1f us, p90 %.1f us, p99 %.1f us, mean %.1f us over %ld sequential jobs (wrong %ld)\n",
           percentile(us, n, 0.50), percentile(us, n, 0.90), percentile(us, n, 0.99), sum / (double)n, n, wrong);
    return wrong ? 1 : 0;
  }
  fprintf(stderr, "load_client: unknown mode %s\n", mode);
  return 2;
}
