/*
 * plainsight benchmark workload: tls_rr.c's round trips on mbedTLS
 * (-DUSE_MBEDTLS, -lmbedtls -lmbedx509 -lmbedcrypto) or wolfSSL
 * (-DUSE_WOLFSSL, -lwolfssl): a client and a server process over loopback
 * TCP; each round trip: client write(N) -> server read(N) -> server
 * write(N) -> client read(N).
 *
 *   embedded_rr CERT KEY SNI MSG_BYTES SECONDS
 *
 * Prints one line: round_trips=R seconds=S rt_per_s=X mb_per_s=Y
 */
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

static void die(const char *m)
{
    fprintf(stderr, "embedded_rr: %s\n", m);
    exit(1);
}

#if defined(USE_MBEDTLS)
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>

typedef struct {
    mbedtls_ssl_context ssl;
    mbedtls_ssl_config conf;
    mbedtls_net_context net;
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    mbedtls_x509_crt crt;
    mbedtls_pk_context pk;
} conn;

static conn *conn_new(int fd, int server, const char *cert, const char *key, const char *sni)
{
    conn *c = calloc(1, sizeof(*c));
    if (!c)
        die("calloc");
    mbedtls_entropy_init(&c->entropy);
    mbedtls_ctr_drbg_init(&c->drbg);
    if (mbedtls_ctr_drbg_seed(&c->drbg, mbedtls_entropy_func, &c->entropy, NULL, 0))
        die("drbg");
    mbedtls_ssl_config_init(&c->conf);
    if (mbedtls_ssl_config_defaults(&c->conf, server ? MBEDTLS_SSL_IS_SERVER : MBEDTLS_SSL_IS_CLIENT,
                                    MBEDTLS_SSL_TRANSPORT_STREAM, MBEDTLS_SSL_PRESET_DEFAULT))
        die("config");
    mbedtls_ssl_conf_rng(&c->conf, mbedtls_ctr_drbg_random, &c->drbg);
    mbedtls_ssl_conf_authmode(&c->conf, MBEDTLS_SSL_VERIFY_NONE);
    if (server) {
        mbedtls_x509_crt_init(&c->crt);
        mbedtls_pk_init(&c->pk);
#if MBEDTLS_VERSION_MAJOR >= 3
        int k = mbedtls_pk_parse_keyfile(&c->pk, key, NULL, mbedtls_ctr_drbg_random, &c->drbg);
#else
        int k = mbedtls_pk_parse_keyfile(&c->pk, key, NULL);
#endif
        if (mbedtls_x509_crt_parse_file(&c->crt, cert) || k ||
            mbedtls_ssl_conf_own_cert(&c->conf, &c->crt, &c->pk))
            die("server cert");
    }
    mbedtls_ssl_init(&c->ssl);
    if (mbedtls_ssl_setup(&c->ssl, &c->conf))
        die("setup");
    if (!server && mbedtls_ssl_set_hostname(&c->ssl, sni))
        die("hostname");
    mbedtls_net_init(&c->net);
    c->net.fd = fd;
    mbedtls_ssl_set_bio(&c->ssl, &c->net, mbedtls_net_send, mbedtls_net_recv, NULL);
    int r;
    while ((r = mbedtls_ssl_handshake(&c->ssl)) != 0)
        if (r != MBEDTLS_ERR_SSL_WANT_READ && r != MBEDTLS_ERR_SSL_WANT_WRITE)
            die("handshake");
    return c;
}

static int conn_write(conn *c, const char *b, int n)
{
    return mbedtls_ssl_write(&c->ssl, (const unsigned char *)b, (size_t)n);
}

static int conn_read(conn *c, char *b, int n)
{
    return mbedtls_ssl_read(&c->ssl, (unsigned char *)b, (size_t)n);
}
#elif defined(USE_WOLFSSL)
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

typedef WOLFSSL conn;

static conn *conn_new(int fd, int server, const char *cert, const char *key, const char *sni)
{
    wolfSSL_Init();
    WOLFSSL_CTX *ctx =
        wolfSSL_CTX_new(server ? wolfSSLv23_server_method() : wolfSSLv23_client_method());
    if (!ctx)
        die("ctx");
    wolfSSL_CTX_set_verify(ctx, WOLFSSL_VERIFY_NONE, NULL);
    if (server && (wolfSSL_CTX_use_certificate_file(ctx, cert, WOLFSSL_FILETYPE_PEM) != 1 ||
                   wolfSSL_CTX_use_PrivateKey_file(ctx, key, WOLFSSL_FILETYPE_PEM) != 1))
        die("server cert");
    WOLFSSL *s = wolfSSL_new(ctx);
    if (!s || wolfSSL_set_fd(s, fd) != 1)
        die("new");
    if (!server && wolfSSL_UseSNI(s, WOLFSSL_SNI_HOST_NAME, sni, (unsigned short)strlen(sni)) != 1)
        die("sni");
    if ((server ? wolfSSL_accept(s) : wolfSSL_connect(s)) != 1)
        die("handshake");
    return s;
}

static int conn_write(conn *c, const char *b, int n)
{
    return wolfSSL_write(c, b, n);
}

static int conn_read(conn *c, char *b, int n)
{
    return wolfSSL_read(c, b, n);
}
#else
#error "build with -DUSE_MBEDTLS or -DUSE_WOLFSSL"
#endif

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int read_all(conn *c, char *buf, int n)
{
    int got = 0;
    while (got < n) {
        int r = conn_read(c, buf + got, n - got);
        if (r <= 0)
            return -1;
        got += r;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: %s CERT KEY SNI MSG_BYTES SECONDS\n", argv[0]);
        return 2;
    }
    int n = atoi(argv[4]);
    double secs = atof(argv[5]);
    if (n <= 0 || n > (1 << 20))
        die("MSG_BYTES");
    char *msg = malloc(n), *buf = malloc(n);
    if (!msg || !buf)
        die("malloc");
    memset(msg, 'x', n);

    int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t al = sizeof(a);
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(ls, (struct sockaddr *)&a, sizeof(a)) || listen(ls, 1) ||
        getsockname(ls, (struct sockaddr *)&a, &al))
        die("listen");

    pid_t child = fork();
    if (child == 0) { /* server */
        int fd = accept(ls, NULL, NULL);
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        conn *s = conn_new(fd, 1, argv[1], argv[2], NULL);
        while (read_all(s, buf, n) == 0)
            if (conn_write(s, msg, n) != n)
                break;
        _exit(0);
    }
    close(ls);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)))
        die("connect");
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    conn *c = conn_new(fd, 0, NULL, NULL, argv[3]);
    for (int i = 0; i < 100; i++) { /* warm up */
        if (conn_write(c, msg, n) != n || read_all(c, buf, n))
            die("warm-up");
    }
    long rounds = 0;
    double t0 = now(), t = t0;
    while (t - t0 < secs) {
        if (conn_write(c, msg, n) != n)
            die("write");
        if (read_all(c, buf, n))
            die("read");
        rounds++;
        t = now();
    }
    close(fd);
    kill(child, SIGTERM);
    waitpid(child, NULL, 0);
    double el = t - t0;
    printf("round_trips=%ld seconds=%.3f rt_per_s=%.0f mb_per_s=%.2f\n", rounds, el, rounds / el,
           rounds * 2.0 * n / el / 1e6);
    return 0;
}
