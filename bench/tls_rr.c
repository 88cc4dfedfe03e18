/*
 * plainsight benchmark workload: TLS request/response round trips over
 * loopback TCP between a client and a server process (system libssl.so.3).
 * Each round trip: client SSL_write(N) -> server SSL_read(N) -> server
 * SSL_write(N) -> client SSL_read(N).
 *
 *   tls_rr CERT KEY SNI MSG_BYTES SECONDS [RATE_MB_S]
 *
 * RATE_MB_S > 0 paces the client to about that much plaintext per second
 * (both directions counted). Prints one line:
 *   round_trips=R seconds=S rt_per_s=X mb_per_s=Y
 */
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *m)
{
    fprintf(stderr, "tls_rr: %s\n", m);
    ERR_print_errors_fp(stderr);
    exit(1);
}

static int read_all(SSL *ssl, char *buf, int n)
{
    int got = 0;
    while (got < n) {
        int r = SSL_read(ssl, buf + got, n - got);
        if (r <= 0) return -1;
        got += r;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: %s CERT KEY SNI MSG_BYTES SECONDS [RATE_MB_S]\n", argv[0]);
        return 2;
    }
    int n = atoi(argv[4]);
    double secs = atof(argv[5]);
    double rate = argc > 6 ? atof(argv[6]) : 0;
    char *msg = malloc(n), *buf = malloc(n);
    memset(msg, 'x', n);

    int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t al = sizeof(a);
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(ls, (struct sockaddr *)&a, sizeof(a)) || listen(ls, 1) || getsockname(ls, (struct sockaddr *)&a, &al))
        die("listen");

    pid_t child = fork();
    if (child == 0) { /* server */
        SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
        if (SSL_CTX_use_certificate_file(ctx, argv[1], SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_use_PrivateKey_file(ctx, argv[2], SSL_FILETYPE_PEM) != 1)
            die("server cert");
        int fd = accept(ls, NULL, NULL);
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        SSL *s = SSL_new(ctx);
        SSL_set_fd(s, fd);
        if (SSL_accept(s) != 1) die("accept");
        while (read_all(s, buf, n) == 0)
            if (SSL_write(s, msg, n) != n) break;
        _exit(0);
    }
    close(ls);
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a))) die("connect");
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    SSL *c = SSL_new(ctx);
    SSL_set_fd(c, fd);
    SSL_set_tlsext_host_name(c, argv[3]);
    if (SSL_connect(c) != 1) die("connect tls");
    for (int i = 0; i < 100; i++) { /* warm up */
        SSL_write(c, msg, n);
        if (read_all(c, buf, n)) die("warm-up read");
    }
    long rounds = 0;
    double t0 = now(), t = t0;
    double per_rt = rate > 0 ? (2.0 * n) / (rate * 1e6) : 0;
    while (t - t0 < secs) {
        if (SSL_write(c, msg, n) != n) die("write");
        if (read_all(c, buf, n)) die("read");
        rounds++;
        t = now();
        if (per_rt > 0) {
            double due = t0 + rounds * per_rt;
            if (due > t) {
                struct timespec ts = { (time_t)(due - t), (long)((due - t - (time_t)(due - t)) * 1e9) };
                nanosleep(&ts, NULL);
                t = now();
            }
        }
    }
    SSL_shutdown(c);
    close(fd);
    kill(child, SIGTERM);
    waitpid(child, NULL, 0);
    double el = t - t0;
    printf("round_trips=%ld seconds=%.3f rt_per_s=%.0f mb_per_s=%.2f\n", rounds, el, rounds / el,
           rounds * 2.0 * n / el / 1e6);
    return 0;
}
