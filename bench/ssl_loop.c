/*
 * plainsight benchmark: the cost the agent adds to each SSL_write/SSL_read.
 *
 * One process holds a TLS client and a TLS server (system libssl.so.3)
 * joined by a BIO pair, so no network or scheduler noise: each round trip is
 * client SSL_write(N) -> server SSL_read -> server SSL_write(N) -> client
 * SSL_read: four probed calls. The client sets server name SNI.
 *
 *   ssl_loop CERT KEY SNI MSG_BYTES SECONDS
 *
 * Prints: round_trips=R seconds=S ns_per_round_trip=X
 */
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *m)
{
    fprintf(stderr, "ssl_loop: %s\n", m);
    ERR_print_errors_fp(stderr);
    exit(1);
}

/* Moves bytes until both handshakes are done. */
static void handshake(SSL *c, SSL *s)
{
    int cd = 0, sd = 0;
    for (int i = 0; i < 1000 && !(cd && sd); i++) {
        if (!cd) {
            int r = SSL_do_handshake(c);
            if (r == 1) cd = 1;
            else if (SSL_get_error(c, r) != SSL_ERROR_WANT_READ) die("client handshake");
        }
        if (!sd) {
            int r = SSL_do_handshake(s);
            if (r == 1) sd = 1;
            else if (SSL_get_error(s, r) != SSL_ERROR_WANT_READ) die("server handshake");
        }
    }
    if (!(cd && sd)) die("handshake did not finish");
}

static void read_all(SSL *ssl, char *buf, int n)
{
    int got = 0;
    while (got < n) {
        int r = SSL_read(ssl, buf + got, n - got);
        if (r <= 0) die("SSL_read");
        got += r;
    }
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: %s CERT KEY SNI MSG_BYTES SECONDS\n", argv[0]);
        return 2;
    }
    int n = atoi(argv[4]);
    double secs = atof(argv[5]);
    SSL_CTX *sctx = SSL_CTX_new(TLS_server_method());
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    if (!sctx || !cctx) die("ctx");
    if (SSL_CTX_use_certificate_file(sctx, argv[1], SSL_FILETYPE_PEM) != 1) die("cert");
    if (SSL_CTX_use_PrivateKey_file(sctx, argv[2], SSL_FILETYPE_PEM) != 1) die("key");
    SSL_CTX_set_verify(cctx, SSL_VERIFY_NONE, NULL);
    SSL *c = SSL_new(cctx), *s = SSL_new(sctx);
    BIO *cb, *sb;
    if (!BIO_new_bio_pair(&cb, 1 << 20, &sb, 1 << 20)) die("bio pair");
    SSL_set_bio(c, cb, cb);
    SSL_set_bio(s, sb, sb);
    SSL_set_connect_state(c);
    SSL_set_accept_state(s);
    SSL_set_tlsext_host_name(c, argv[3]);
    handshake(c, s);

    char *msg = malloc(n), *buf = malloc(n);
    memset(msg, 'x', n);
    /* warm up */
    for (int i = 0; i < 200; i++) {
        if (SSL_write(c, msg, n) != n) die("SSL_write");
        read_all(s, buf, n);
        if (SSL_write(s, msg, n) != n) die("SSL_write");
        read_all(c, buf, n);
    }
    long rounds = 0;
    double t0 = now(), t;
    do {
        for (int i = 0; i < 100; i++) {
            SSL_write(c, msg, n);
            read_all(s, buf, n);
            SSL_write(s, msg, n);
            read_all(c, buf, n);
        }
        rounds += 100;
        t = now();
    } while (t - t0 < secs);
    printf("round_trips=%ld seconds=%.3f ns_per_round_trip=%.0f\n", rounds, t - t0, (t - t0) * 1e9 / rounds);
    return 0;
}
