/*
 * phonewipe-pwread: read sampled extents of files past the kernel's page cache, without root.
 *
 * An unrooted phone is erased by filling its free storage with files; reading them back with
 * a buffered `dd` right after writing is answered from the page cache, whatever the flash
 * stored. This reader opens each file with O_DIRECT and reads into a page-aligned buffer
 * (toybox's dd cannot: its buffer is unaligned and the kernel answers EINVAL). Where the file
 * system refuses O_DIRECT it asks the kernel to drop the file's clean cached pages
 * (posix_fadvise POSIX_FADV_DONTNEED, after fdatasync) before each read instead.
 *
 *   phonewipe-pwread --probe FILE        prints "direct" or "fadvise": how FILE will be read
 *   phonewipe-pwread FILE:OFFSET:LENGTH...  the extents' bytes, in order, on stdout
 *
 * Offsets and lengths are multiples of 4096. On a read error, what was read before it has
 * been written; the error goes to stderr and the exit status is 1 (as with `dd && dd`).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char MARK[] = "phonewipe-pwread/1";
enum { ALIGN = 4096, BUF = 1 << 20 };

struct source {
    char path[4096];
    int fd;
    int direct;
};

static int open_source(struct source *src, const char *path) {
    if (src->fd >= 0 && strcmp(src->path, path) == 0)
        return 0;
    if (src->fd >= 0)
        close(src->fd);
    snprintf(src->path, sizeof src->path, "%s", path);
    src->direct = 1;
    src->fd = open(path, O_RDONLY | O_DIRECT);
    if (src->fd < 0 && errno == EINVAL) {
        src->direct = 0;
        src->fd = open(path, O_RDONLY);
    }
    return src->fd < 0 ? -1 : 0;
}

static int write_all(const char *p, size_t n) {
    while (n) {
        ssize_t w = write(1, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int read_extent(struct source *src, char *buf, long long off, long long len) {
    if (!src->direct) {
        fdatasync(src->fd);
        posix_fadvise(src->fd, off, len, POSIX_FADV_DONTNEED);
    }
    while (len > 0) {
        size_t want = len < BUF ? (size_t)len : BUF;
        ssize_t got = pread(src->fd, buf, want, off);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0 && errno == EINVAL && src->direct) {  /* this file refuses O_DIRECT */
            int fd = open(src->path, O_RDONLY);
            if (fd < 0)
                return -1;
            close(src->fd);
            src->fd = fd;
            src->direct = 0;
            return read_extent(src, buf, off, len);
        }
        if (got <= 0) {
            if (got == 0)
                errno = EIO;  /* short file: the extent is not all there */
            return -1;
        }
        if (write_all(buf, (size_t)got) < 0)
            return -1;
        off += got;
        len -= got;
    }
    return 0;
}

static int parse(char *arg, char **path, long long *off, long long *len) {
    char *second = strrchr(arg, ':');
    if (!second || second == arg)
        return -1;
    *second = '\0';
    char *first = strrchr(arg, ':');
    if (!first)
        return -1;
    *first = '\0';
    char *end1, *end2;
    *off = strtoll(first + 1, &end1, 10);
    *len = strtoll(second + 1, &end2, 10);
    *path = arg;
    if (*end1 || *end2 || *off < 0 || *len < 0 || *off % ALIGN || *len % ALIGN)
        return -1;
    return 0;
}

int main(int argc, char **argv) {
    struct source src = {.fd = -1};
    if (argc == 2 && strcmp(argv[1], "--version") == 0) {
        puts(MARK);
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "--probe") == 0) {
        if (open_source(&src, argv[2]) < 0) {
            fprintf(stderr, "pwread: %s: %s\n", argv[2], strerror(errno));
            return 1;
        }
        puts(src.direct ? "direct" : "fadvise");
        return 0;
    }
    if (argc < 2) {
        fprintf(stderr, "usage: phonewipe-pwread FILE:OFFSET:LENGTH... | --probe FILE\n");
        return 2;
    }
    char *buf;
    if (posix_memalign((void **)&buf, ALIGN, BUF) != 0) {
        fprintf(stderr, "pwread: out of memory\n");
        return 1;
    }
    for (int i = 1; i < argc; i++) {
        char *path;
        long long off, len;
        if (parse(argv[i], &path, &off, &len) < 0) {
            fprintf(stderr, "pwread: bad extent %s (FILE:OFFSET:LENGTH, 4096-aligned)\n", argv[i]);
            return 2;
        }
        if (open_source(&src, path) < 0 || read_extent(&src, buf, off, len) < 0) {
            fprintf(stderr, "pwread: %s: %s\n", path, strerror(errno));
            return 1;
        }
    }
    return 0;
}
