/* Whether this disk overlaps `fdatasync`s of one file from several
 * threads: each of THREADS threads overwrites 4 KiB blocks of its own part
 * of a 64 MiB file of zeros (first written and synced, so no write changes
 * the file's size) and `fdatasync`s after each, for 3 s. Prints the syncs
 * a second of all threads together; more than one thread's rate means the
 * kernel and the disk run them at once (docs/benchmarks.md, "overlapping
 * fdatasyncs").
 *   gcc -O2 -pthread -o /tmp/fsync_concurrent benches/tools/fsync_concurrent.c
 *   for t in 1 2 4; do /tmp/fsync_concurrent $t target/fsync_concurrent.dat; done */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_THREADS 8
#define FILE_BYTES (64L << 20)

static int fd;
static volatile int stop;
static long counts[MAX_THREADS];

static void *run(void *arg) {
  long id = (long)arg;
  char block[4096];
  memset(block, 'x', sizeof block);
  long base = id * (FILE_BYTES / MAX_THREADS), n = 0;
  while (!stop) {
    if (pwrite(fd, block, sizeof block, base + (n % 2000) * 4096) != sizeof block ||
        fdatasync(fd) != 0) {
      perror("write or sync");
      exit(1);
    }
    n++;
  }
  counts[id] = n;
  return 0;
}

int main(int argc, char **argv) {
  int threads = argc > 1 ? atoi(argv[1]) : 1;
  const char *path = argc > 2 ? argv[2] : "fsync_concurrent.dat";
  if (threads < 1 || threads > MAX_THREADS) {
    fprintf(stderr, "threads: 1 to %d\n", MAX_THREADS);
    return 1;
  }
  fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) {
    perror(path);
    return 1;
  }
  static char zeros[1 << 20];
  for (long at = 0; at < FILE_BYTES; at += sizeof zeros) {
    if (pwrite(fd, zeros, sizeof zeros, at) != sizeof zeros) {
      perror("zeros");
      return 1;
    }
  }
  fsync(fd);
  pthread_t tid[MAX_THREADS];
  for (long i = 0; i < threads; i++) pthread_create(&tid[i], 0, run, (void *)i);
  sleep(3);
  stop = 1;
  long total = 0;
  for (int i = 0; i < threads; i++) {
    pthread_join(tid[i], 0);
    total += counts[i];
  }
  printf("%d threads: %.0f fdatasyncs/s in all\n", threads, total / 3.0);
  close(fd);
  unlink(path);
  return 0;
}
