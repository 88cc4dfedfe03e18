import java.io.ByteArrayOutputStream;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Enumeration;
import java.util.zip.ZipEntry;
import java.util.zip.ZipFile;
import org.objectweb.asm.ClassReader;
import org.objectweb.asm.ClassWriter;
import org.objectweb.asm.commons.ClassRemapper;
import org.objectweb.asm.commons.Remapper;

/**
 * Build step of the Java agent (Makefile, target jvm): copies ASM's core
 * classes from Debian's asm.jar into a folder, moved from org.objectweb.asm
 * to dev.plainsight.jsse.asm, so that an application's own ASM never meets
 * ours. Usage: java -cp asm.jar:asm-commons.jar Relocate.java asm.jar out/
 */
public final class Relocate {
    private static final String FROM = "org/objectweb/asm/";
    private static final String TO = "dev/plainsight/jsse/asm/";

    public static void main(String[] args) throws Exception {
        Path out = Path.of(args[1]);
        // Class names only: member names stay as they are.
        Remapper remap = new Remapper() {
            @Override
            public String map(String internalName) {
                return internalName.startsWith(FROM) ? TO + internalName.substring(FROM.length()) : internalName;
            }
        };
        try (ZipFile jar = new ZipFile(args[0])) {
            Enumeration<? extends ZipEntry> entries = jar.entries();
            while (entries.hasMoreElements()) {
                ZipEntry e = entries.nextElement();
                String name = e.getName();
                // Only the core package: the agent needs nothing else.
                if (!name.startsWith(FROM) || !name.endsWith(".class")
                        || name.substring(FROM.length()).contains("/")) {
                    continue;
                }
                byte[] bytes;
                try (InputStream in = jar.getInputStream(e)) {
                    bytes = in.readAllBytes();
                }
                ClassReader reader = new ClassReader(bytes);
                ClassWriter writer = new ClassWriter(0);
                reader.accept(new ClassRemapper(writer, remap), 0);
                Path target = out.resolve(TO + name.substring(FROM.length()));
                Files.createDirectories(target.getParent());
                Files.write(target, writer.toByteArray());
            }
        }
    }
}
