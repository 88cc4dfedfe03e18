package sun.security.ssl;

import java.net.InetAddress;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.WeakHashMap;
import java.util.concurrent.atomic.AtomicLong;
import javax.net.ssl.ExtendedSSLSession;
import javax.net.ssl.SNIHostName;
import javax.net.ssl.SNIServerName;
import javax.net.ssl.SSLEngine;
import javax.net.ssl.SSLEngineResult;
import javax.net.ssl.SSLSession;
import javax.net.ssl.SSLSocket;

/**
 * What the code woven into JSSE calls. plainsight's Java agent defines
 * this class inside java.base's package sun.security.ssl (a Lookup into
 * that package): the woven code calls a class of its own package, and no
 * class path is changed (an appended bootstrap class path would make
 * HotSpot print a warning on the application's output). Every entry point
 * swallows everything it throws: the application's I/O must never fail
 * because of us.
 *
 * <p>Each connection (an SSLSocket or an SSLEngine) gets a number and is
 * announced (open: its server name and ends) at its first plaintext, and
 * again every few seconds, so that a plainsight started later learns it
 * too. Its bytes go to data until the verdict file says what the agent
 * decided (the agent writes it; a probe cannot write into the JVM under
 * kernel lockdown): a connection not wanted costs a map look-up per call
 * from then on.
 */
public final class PlainsightJsse {
    private PlainsightJsse() {}

    private static final int SENT = 0;
    private static final int RECEIVED = 1;
    /** A connection is announced again after this long (a later plainsight learns it). */
    private static final long ANNOUNCE_AGAIN_NS = 5_000_000_000L;
    /** Bytes copied out of a ByteBuffer at most per call (a TLS record is 16 KiB). */
    private static final int MAX_COPY = 1 << 20;

    /** Connection numbers: far from any native SSL * the same process may use. */
    private static final AtomicLong IDS = new AtomicLong(1L << 62);

    // A connection's state is a long[] (no nested class: the agent defines
    // this one class only): its number, when it was announced, closed.
    private static final int ID = 0;
    private static final int ANNOUNCED = 1;
    private static final int CLOSED = 2;
    /** The agent's verdict, once read: 0 not known, 1 wanted, 2 not wanted. */
    private static final int VERDICT = 3;
    private static final int SLOTS = 65536;

    /** By identity (SSLSocketImpl and SSLEngineImpl keep Object's equals), weakly. */
    private static final Map<Object, long[]> CONNS = Collections.synchronizedMap(new WeakHashMap<>());

    /**
     * Each thread's last connection and its state: a thread mostly works on
     * one connection, and this spares the shared map's lock on every call.
     * The connection is held weakly, like in CONNS.
     */
    private static final ThreadLocal<Object[]> LAST = new ThreadLocal<>();

    /** The state of `conn`, made if new (`make`), else null when not known. */
    private static long[] state(Object conn, boolean make) {
        Object[] last = LAST.get();
        if (last != null && ((java.lang.ref.WeakReference<?>) last[0]).get() == conn) {
            return (long[]) last[1];
        }
        long[] c = CONNS.get(conn);
        if (c == null) {
            if (!make) {
                return null;
            }
            c = new long[] {IDS.getAndIncrement(), 0, 0, 0};
            long[] before = CONNS.putIfAbsent(conn, c);
            if (before != null) {
                c = before;
            }
        }
        LAST.set(new Object[] {new java.lang.ref.WeakReference<>(conn), c});
        return c;
    }

    /** Positions of an engine call's buffers at its entry, by thread. */
    private static final ThreadLocal<int[]> POSITIONS = new ThreadLocal<>();

    private static volatile boolean ready;
    /** The verdict file (src/jvm/files.rs): per slot, tag << 2 | wanted << 1 | decided. */
    private static volatile java.nio.MappedByteBuffer verdicts;

    /** Loads the native library and maps the verdict file; nothing is reported before. */
    public static void start(String library, String verdictFile) throws java.io.IOException {
        try (java.nio.channels.FileChannel f = java.nio.channels.FileChannel.open(
                java.nio.file.Path.of(verdictFile), java.nio.file.StandardOpenOption.READ)) {
            java.nio.MappedByteBuffer m = f.map(java.nio.channels.FileChannel.MapMode.READ_ONLY, 0, SLOTS * 4L);
            m.order(java.nio.ByteOrder.nativeOrder());
            verdicts = m;
        }
        System.load(library);
        ready = true;
    }

    /** The agent's verdict for connection `id`: 0 not known yet, 1 wanted, 2 not wanted. */
    private static int verdict(long id) {
        java.nio.MappedByteBuffer m = verdicts;
        if (m == null) {
            return 0;
        }
        int v = m.getInt((int) (id & (SLOTS - 1)) * 4);
        if ((v & 1) == 0 || (v >>> 2) != (int) ((id >>> 16) & 0x3fffffff)) {
            return 0;
        }
        return (v & 2) != 0 ? 1 : 2;
    }

    // ---- SSLSocketImpl ----

    /** AppOutputStream.write(b, off, len) returned: the bytes were sent. */
    public static void socketWrite(Object socket, byte[] b, int off, int len) {
        try {
            long[] c = wanted(socket);
            if (c != null && len > 0) {
                data(c[ID], SENT, b, off, len);
            }
        } catch (Throwable t) {
            failed(t);
        }
    }

    /** AppInputStream.read(b, off, len) returns n. */
    public static void socketRead(int n, Object socket, byte[] b, int off) {
        try {
            if (n <= 0) {
                return;
            }
            long[] c = wanted(socket);
            if (c != null) {
                data(c[ID], RECEIVED, b, off, n);
            }
        } catch (Throwable t) {
            failed(t);
        }
    }

    /** SSLSocketImpl.close() or SSLEngineImpl.closeOutbound(). */
    public static void closed(Object conn) {
        try {
            if (!ready) {
                return;
            }
            long[] c = CONNS.get(conn);
            if (c != null && c[CLOSED] == 0) {
                c[CLOSED] = 1;
                close(c[ID]);
            }
        } catch (Throwable t) {
            failed(t);
        }
    }

    // ---- SSLEngineImpl ----

    /** wrap/unwrap entered: the positions of the buffers plaintext is taken from or put in. */
    public static void engineEnter(Object engine, ByteBuffer[] bufs, int off, int len) {
        try {
            if (!ready || bufs == null || off < 0 || len <= 0 || off > bufs.length - len) {
                return;
            }
            long[] c = state(engine, false);
            if (c != null && (c[VERDICT] == 2 || c[CLOSED] != 0)) {
                return;
            }
            int[] pos = new int[len];
            for (int i = 0; i < len; i++) {
                ByteBuffer bb = bufs[off + i];
                pos[i] = bb == null ? -1 : bb.position();
            }
            POSITIONS.set(pos);
        } catch (Throwable t) {
            failed(t);
        }
    }

    /** wrap returned: result.bytesConsumed() bytes of plaintext were taken from srcs. */
    public static void engineWrap(SSLEngineResult r, Object engine, ByteBuffer[] srcs, int off, int len) {
        engineExit(r == null ? 0 : r.bytesConsumed(), engine, srcs, off, len, SENT);
    }

    /** unwrap returned: result.bytesProduced() bytes of plaintext were put in dsts. */
    public static void engineUnwrap(SSLEngineResult r, Object engine, ByteBuffer[] dsts, int off, int len) {
        engineExit(r == null ? 0 : r.bytesProduced(), engine, dsts, off, len, RECEIVED);
    }

    private static void engineExit(int n, Object engine, ByteBuffer[] bufs, int off, int len, int dir) {
        try {
            int[] pos = POSITIONS.get();
            if (pos == null) {
                return;
            }
            POSITIONS.remove();
            if (n <= 0 || pos.length != len) {
                return;
            }
            long[] c = wanted(engine);
            if (c == null) {
                return;
            }
            // The bytes are those between each buffer's position at entry and now, in order.
            byte[] out = new byte[Math.min(n, MAX_COPY)];
            int got = 0;
            for (int i = 0; i < len && got < out.length; i++) {
                ByteBuffer bb = bufs[off + i];
                if (bb == null || pos[i] < 0 || bb.position() <= pos[i]) {
                    continue;
                }
                int take = Math.min(bb.position() - pos[i], out.length - got);
                ByteBuffer view = bb.duplicate();
                view.position(pos[i]);
                view.get(out, got, take);
                got += take;
            }
            if (got > 0) {
                data(c[ID], dir, out, 0, got);
            }
        } catch (Throwable t) {
            failed(t);
        }
    }

    /** The first failure is kept where plainsight can read it (the attach's "properties"). */
    private static void failed(Throwable t) {
        try {
            if (System.getProperty("plainsight.jsse.error") == null) {
                System.setProperty("plainsight.jsse.error", String.valueOf(t));
            }
        } catch (Throwable ignored) {
            // never the application's problem
        }
    }

    // ---- the connection ----

    /** The connection, announced (again when it was long ago); null once closed. */
    private static long[] wanted(Object conn) {
        if (!ready || conn == null) {
            return null;
        }
        long[] c = state(conn, true);
        if (c[CLOSED] != 0 || c[VERDICT] == 2) {
            return null;
        }
        if (c[VERDICT] == 0 && c[ANNOUNCED] != 0) {
            c[VERDICT] = verdict(c[ID]);
            if (c[VERDICT] == 2) {
                return null;
            }
        }
        long now = System.nanoTime();
        long at = c[ANNOUNCED];
        if (at == 0 || now - at > ANNOUNCE_AGAIN_NS) {
            c[ANNOUNCED] = now == 0 ? 1 : now;
            announce(c[ID], conn);
        }
        return c;
    }

    private static void announce(long id, Object conn) {
        if (conn instanceof SSLSocket) {
            SSLSocket s = (SSLSocket) conn;
            boolean client = s.getUseClientMode();
            open(id, client, bytes(s.getLocalAddress()), s.getLocalPort(),
                 bytes(s.getInetAddress()), s.getPort(),
                 name(client, s.getSSLParameters().getServerNames(), client ? null : s.getSession()));
        } else if (conn instanceof SSLEngine) {
            SSLEngine e = (SSLEngine) conn;
            boolean client = e.getUseClientMode();
            open(id, client, null, 0, literal(e.getPeerHost()), e.getPeerPort(),
                 name(client, e.getSSLParameters().getServerNames(), client ? null : e.getSession()));
        }
    }

    /** The server name: the one a client sent, or the one a server's client asked for. */
    private static byte[] name(boolean client, List<SNIServerName> configured, SSLSession session) {
        List<SNIServerName> names = configured;
        if (!client) {
            names = session instanceof ExtendedSSLSession
                    ? ((ExtendedSSLSession) session).getRequestedServerNames()
                    : null;
        }
        if (names != null) {
            for (SNIServerName n : names) {
                if (n instanceof SNIHostName) {
                    return ((SNIHostName) n).getAsciiName().getBytes(StandardCharsets.US_ASCII);
                }
            }
        }
        return null;
    }

    private static byte[] bytes(InetAddress a) {
        return a == null ? null : a.getAddress();
    }

    /** An engine's peer host when it is an address literal; a name is never resolved here. */
    private static byte[] literal(String host) {
        if (host == null || host.isEmpty() || host.length() > 45) {
            return null;
        }
        for (int i = 0; i < host.length(); i++) {
            char ch = host.charAt(i);
            boolean ok = (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F')
                    || ch == '.' || ch == ':';
            if (!ok) {
                return null;
            }
        }
        boolean v6 = host.indexOf(':') >= 0;
        if (!v6 && !host.matches("\\d{1,3}(\\.\\d{1,3}){3}")) {
            return null; // e.g. "cafe.de" is a name made of hex letters
        }
        try {
            return InetAddress.getByName(host).getAddress();
        } catch (Exception e) {
            return null;
        }
    }

    // ---- libplainsight-jsse.so (jvm/native): each hands its arguments to a function plainsight probes ----

    /** A connection: its server name and ends. */
    private static native void open(long id, boolean client, byte[] local, int localPort,
                                   byte[] peer, int peerPort, byte[] name);

    /** Plaintext sent (direction 0) or received (1). */
    private static native void data(long id, int direction, byte[] b, int off, int len);

    /** The connection's end. */
    private static native void close(long id);
}
