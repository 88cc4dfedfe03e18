// make bench, Java: one JVM, a JSSE server thread and a JSSE client on
// 127.0.0.1 (SSLSocket both), one connection; a round trip is the client
// writing SIZE bytes and reading SIZE back. After "READY\n" it waits for a
// line on stdin (so that an agent can attach first), warms up for 1 s, runs
// for SECONDS and prints "rt_per_s=<n>".
//
//   java -cp bench-classes:fixture-classes JsseLoop SIZE SECONDS CERT KEY
// (FixtureTls, from tests/fixtures/java, reads the PEM files.)

import java.io.BufferedReader;
import java.io.DataInputStream;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.net.InetAddress;
import java.nio.file.Path;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLParameters;
import javax.net.ssl.SSLServerSocket;
import javax.net.ssl.SSLSocket;

public final class JsseLoop {
    private JsseLoop() {}

    public static void main(String[] a) throws Exception {
        int size = Integer.parseInt(a[0]);
        double seconds = Double.parseDouble(a[1]);
        SSLContext server = FixtureTls.serverContext(Path.of(a[2]), Path.of(a[3]));
        SSLContext client = FixtureTls.clientContext(Path.of(a[2]));
        SSLServerSocket ss = (SSLServerSocket) server.getServerSocketFactory()
                .createServerSocket(0, 1, InetAddress.getLoopbackAddress());
        Thread t = new Thread(() -> serve(ss, size));
        t.setDaemon(true);
        t.start();
        System.out.println("READY");
        System.out.flush();
        new BufferedReader(new InputStreamReader(System.in)).readLine();
        SSLSocket s = (SSLSocket) client.getSocketFactory()
                .createSocket(InetAddress.getLoopbackAddress(), ss.getLocalPort());
        SSLParameters p = s.getSSLParameters();
        FixtureTls.setSni(p, "api.acme.com");
        s.setSSLParameters(p);
        s.setTcpNoDelay(true);
        OutputStream out = s.getOutputStream();
        DataInputStream in = new DataInputStream(s.getInputStream());
        byte[] msg = new byte[size];
        byte[] back = new byte[size];
        long warm = System.nanoTime() + 1_000_000_000L;
        while (System.nanoTime() < warm) {
            out.write(msg);
            in.readFully(back);
        }
        long n = 0;
        long t0 = System.nanoTime();
        long end = t0 + (long) (seconds * 1e9);
        long now;
        do {
            out.write(msg);
            in.readFully(back);
            n++;
            now = System.nanoTime();
        } while (now < end);
        System.out.printf("rt_per_s=%.0f%n", n / ((now - t0) / 1e9));
        s.close();
    }

    private static void serve(SSLServerSocket ss, int size) {
        try (SSLSocket c = (SSLSocket) ss.accept()) {
            c.setTcpNoDelay(true);
            InputStream in = c.getInputStream();
            OutputStream out = c.getOutputStream();
            DataInputStream din = new DataInputStream(in);
            byte[] buf = new byte[size];
            while (true) {
                din.readFully(buf);
                out.write(buf);
            }
        } catch (Exception e) {
            // the client is done
        }
    }
}
