/* What an fdatasync costs after an append that grows a file, against one
 * after an overwrite of zeros already on disk: N writes of SIZE bytes, each
 * followed by fdatasync, to /tmp/fsx.dat; prints p50, p99, p99.9 and max.
 * MODE 0: appends; 1: overwrites of a file first filled with zeros and
 * synced; 2: writes into fallocate'd space (unwritten extents).
 *   gcc -O2 -o /tmp/fsync_overwrite benches/tools/fsync_overwrite.c
 *   /tmp/fsync_overwrite MODE 5000 4096
 * Under CPU load: start two `sh -c 'while :; do :; done'` first. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
#include <unistd.h>
#include <string.h>
#include <time.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1e6+t.tv_nsec/1e3;}
int cmp(const void*a,const void*b){double x=*(double*)a,y=*(double*)b;return x<y?-1:x>y;}
int main(int argc,char**argv){
  int mode=atoi(argv[1]); int n=atoi(argv[2]); int sz=atoi(argv[3]);
  const char*path="/tmp/fsx.dat"; unlink(path);
  int fd=open(path,O_CREAT|O_RDWR,0644);
  char*buf=malloc(1<<20); memset(buf,0,1<<20);
  if(mode==1){ for(long i=0;i<(long)n*sz;i+=1<<20) write(fd,buf,1<<20); fsync(fd); lseek(fd,0,SEEK_SET);}
  if(mode==2){ fallocate(fd,0,0,(long)n*sz); fsync(fd);}
  memset(buf,'x',sz);
  double*l=malloc(sizeof(double)*n);
  for(int i=0;i<n;i++){ double t=now(); pwrite(fd,buf,sz,(long)i*sz); fdatasync(fd); l[i]=now()-t;}
  qsort(l,n,sizeof(double),cmp);
  printf("mode %s: p50 %.0f us p99 %.0f us p99.9 %.0f max %.0f\n", mode==0?"append":mode==1?"overwrite-zeroed":"fallocate", l[n/2], l[n*99/100], l[n*999/1000], l[n-1]);
}
