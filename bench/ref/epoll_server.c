/* Physical reference: a one-thread epoll HTTP/1.1 server with a canned reply.
 *
 * It answers every complete request head ("\r\n\r\n") in its read buffer with
 * the same 13-byte "Hello, world!" response, all answers to one read in one
 * write (so pipelined requests cost one syscall pair), and closes after the
 * reply when the request asked for "Connection: close". It parses nothing
 * else: its cost per request is the kernel's (accept, read, write, epoll) plus
 * a memmem, which makes it the floor for any server and the ceiling of the
 * load generator. Usage: epoll_server PORT (binds 127.0.0.1 only).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF 65536
#define MAXFD 65536

static const char REPLY[] =
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, world!";
static const char REPLY_CLOSE[] =
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\nConnection: close\r\n\r\nHello, world!";

struct conn {
    size_t len;        /* bytes of an incomplete request head kept from the last read */
    char buf[BUF];
};

static struct conn *conns[MAXFD];
static volatile sig_atomic_t stop;

static void on_term(int sig) { (void)sig; stop = 1; }

static void drop(int ep, int fd) {
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
    close(fd);
    free(conns[fd]);
    conns[fd] = NULL;
}

/* Reads what is there, answers every complete head; returns 0 to keep the
 * connection, -1 to close it. */
static int serve(int fd) {
    static char out[BUF / 16 * sizeof(REPLY_CLOSE)];
    struct conn *c = conns[fd];
    for (;;) {
        ssize_t n = read(fd, c->buf + c->len, BUF - c->len);
        if (n == 0) return -1;
        if (n < 0) return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
        c->len += (size_t)n;
        size_t pos = 0, olen = 0;
        int close_after = 0;
        for (;;) {
            char *end = memmem(c->buf + pos, c->len - pos, "\r\n\r\n", 4);
            if (end == NULL) break;
            size_t head_len = (size_t)(end - (c->buf + pos)) + 4;
            if (memmem(c->buf + pos, head_len, "Connection: close", 17) ||
                memmem(c->buf + pos, head_len, "connection: close", 17)) {
                close_after = 1;
            }
            const char *r = close_after ? REPLY_CLOSE : REPLY;
            size_t rlen = close_after ? sizeof(REPLY_CLOSE) - 1 : sizeof(REPLY) - 1;
            if (olen + rlen > sizeof(out)) return -1;
            memcpy(out + olen, r, rlen);
            olen += rlen;
            pos += head_len;
            if (close_after) break;
        }
        if (olen > 0) {
            size_t done = 0;
            while (done < olen) {  /* replies are tiny; a full socket buffer here means a broken client */
                ssize_t w = write(fd, out + done, olen - done);
                if (w <= 0) return -1;
                done += (size_t)w;
            }
        }
        if (close_after) return -1;
        memmove(c->buf, c->buf + pos, c->len - pos);
        c->len -= pos;
        if (c->len == BUF) return -1; /* head larger than the buffer */
    }
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[1]))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) < 0 || listen(ls, 4096) < 0) {
        perror("bind/listen");
        return 1;
    }
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    struct epoll_event evs[256];
    while (!stop) {
        int n = epoll_wait(ep, evs, 256, 500);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == ls) {
                for (;;) {
                    int cfd = accept4(ls, NULL, NULL, SOCK_NONBLOCK);
                    if (cfd < 0) break;
                    if (cfd >= MAXFD) { close(cfd); continue; }
                    setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    conns[cfd] = calloc(1, sizeof(struct conn));
                    struct epoll_event cev = {.events = EPOLLIN, .data.fd = cfd};
                    epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &cev);
                }
            } else if (serve(fd) < 0) {
                drop(ep, fd);
            }
        }
    }
    return 0;
}
