/* What one 4 KiB durable write costs on this disk with each way of asking
 * for it: N writes of SIZE bytes over a file first filled with zeros and
 * synced (so no write changes the file's size), each made durable by
 * MODE 0: write + fdatasync (what the journal does);
 *      1: O_DIRECT|O_DSYNC (one call, no page cache);
 *      2: O_DIRECT write + fdatasync;
 *      3: O_DSYNC through the page cache;
 *      4: pwritev2 with RWF_DSYNC.
 * Prints p50, p90, p99, p99.9 and max.
 *   gcc -O2 -o /tmp/fsync_flags benches/tools/fsync_flags.c
 *   for m in 0 1 2 3 4; do /tmp/fsync_flags $m 5000 4096; done */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void die(const char *what) { perror(what); exit(1); }

int main(int argc, char **argv) {
  if (argc != 4) { fprintf(stderr, "usage: fsync_flags MODE N SIZE\n"); return 2; }
  int mode = atoi(argv[1]), n = atoi(argv[2]), sz = atoi(argv[3]);
  const char *names[] = {"write+fdatasync", "O_DIRECT|O_DSYNC", "O_DIRECT+fdatasync",
                         "O_DSYNC buffered", "pwritev2 RWF_DSYNC"};
  if (mode < 0 || mode > 4 || n < 1 || sz < 512 || sz % 512 != 0 || sz > (1 << 20)) {
    fprintf(stderr, "MODE 0-4, N >= 1, SIZE a multiple of 512 up to 1 MiB\n");
    return 2;
  }
  const char *path = "/tmp/fsync_flags.dat";
  unlink(path);
  int fd = open(path, O_CREAT | O_RDWR, 0644);
  if (fd < 0) die("open");
  char *buf;
  if (posix_memalign((void **)&buf, 4096, 1 << 20) != 0) die("posix_memalign");
  memset(buf, 0, 1 << 20);
  for (long at = 0; at < (long)n * sz + (1 << 20); at += 1 << 20)
    if (write(fd, buf, 1 << 20) != 1 << 20) die("write zeros");
  if (fsync(fd) != 0) die("fsync");
  close(fd);
  int flags = O_RDWR;
  if (mode == 1 || mode == 2) flags |= O_DIRECT;
  if (mode == 1 || mode == 3) flags |= O_DSYNC;
  fd = open(path, flags);
  if (fd < 0) die("open again");
  memset(buf, 'x', sz);
  double *l = malloc(sizeof(double) * n);
  for (int i = 0; i < n; i++) {
    double t = now();
    struct iovec v = {buf, sz};
    ssize_t wrote = mode == 4 ? pwritev2(fd, &v, 1, (long)i * sz, RWF_DSYNC)
                              : pwrite(fd, buf, sz, (long)i * sz);
    if (wrote != sz) die("write");
    if ((mode == 0 || mode == 2) && fdatasync(fd) != 0) die("fdatasync");
    l[i] = now() - t;
  }
  qsort(l, n, sizeof(double), cmp);
  printf("%-20s p50 %5.0f p90 %5.0f p99 %5.0f p99.9 %5.0f max %6.0f us\n", names[mode], l[n / 2],
         l[n * 9 / 10], l[n * 99 / 100], l[n * 999 / 1000], l[n - 1]);
  unlink(path);
  return 0;
}
