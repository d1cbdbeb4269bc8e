/* Preloaded into a broker by tests that need a bad disk (support::build_fsync_shim): for
 * files whose path contains $ODRADEK_FAIL_FSYNC_MATCH, for as long as the file
 * $ODRADEK_FAIL_FSYNC_TRIGGER exists, fsync and fdatasync fail with EIO, or, with
 * $ODRADEK_FAIL_FSYNC_HANG set, wait until the trigger is gone and then sync (a disk that
 * stalls). Everything else goes to libc. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int triggered(void) {
    const char *trigger = getenv("ODRADEK_FAIL_FSYNC_TRIGGER");
    return trigger && access(trigger, F_OK) == 0;
}

static int matches(int fd) {
    const char *match = getenv("ODRADEK_FAIL_FSYNC_MATCH");
    if (!match || !triggered()) return 0;
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n < 0) return 0;
    path[n] = 0;
    return strstr(path, match) != NULL;
}

/* Whether this call fails; a hanging one returns only once the trigger is gone. */
static int should_fail(int fd) {
    if (!matches(fd)) return 0;
    if (!getenv("ODRADEK_FAIL_FSYNC_HANG")) return 1;
    while (triggered()) usleep(10000);
    return 0;
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (should_fail(fd)) { errno = EIO; return -1; }
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    return real(fd);
}

int fsync(int fd) {
    static int (*real)(int);
    if (should_fail(fd)) { errno = EIO; return -1; }
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    return real(fd);
}
