package dev.plainsight.jsse;

import java.io.InputStream;
import java.lang.instrument.Instrumentation;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.MethodType;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * plainsight's Java agent, loaded into a running JVM by the plainsight
 * agent (HotSpot's dynamic attach, src/jvm). Its options: the paths of the
 * native library (jvm/native) and of the verdict file (src/jvm/files.rs),
 * as the JVM sees them, separated by a comma.
 *
 * <p>It defines the hook class (sun.security.ssl.PlainsightJsse, carried
 * as a resource) inside java.base's package through a Lookup there, lets
 * it load the native library, and weaves JSSE's classes, those loaded
 * already included. The system property {@code plainsight.jsse} tells a
 * later plainsight that this JVM has the agent: it is never loaded twice.
 */
public final class Agent {
    private Agent() {}

    /** The property that marks a JVM as having the agent; its value says what was woven. */
    static final String PROPERTY = "plainsight.jsse";
    private static final String PACKAGE = "sun.security.ssl";
    private static final String HOOK_RESOURCE = "/dev/plainsight/jsse/PlainsightJsse.bin";

    public static void agentmain(String options, Instrumentation inst) throws Throwable {
        if (System.getProperty(PROPERTY) != null) {
            return;
        }
        // "<native library>,<verdict file>", as the JVM sees them.
        String[] files = (options == null ? "" : options.trim()).split(",");
        if (files.length != 2 || files[0].isEmpty() || files[1].isEmpty()) {
            throw new IllegalArgumentException("plainsight: expected <library>,<verdicts>");
        }
        System.setProperty(PROPERTY, "loading");
        Class<?> anchor = Class.forName(PACKAGE + ".SSLSocketImpl", false, null);
        Module base = anchor.getModule();
        inst.redefineModule(base, Set.of(), Map.of(), Map.of(PACKAGE, Set.of(Agent.class.getModule())),
                            Set.of(), Map.of());
        MethodHandles.Lookup lookup = MethodHandles.privateLookupIn(anchor, MethodHandles.lookup());
        byte[] bytes;
        try (InputStream in = Agent.class.getResourceAsStream(HOOK_RESOURCE)) {
            if (in == null) {
                throw new IllegalStateException("plainsight: " + HOOK_RESOURCE + " missing from the agent jar");
            }
            bytes = in.readAllBytes();
        }
        Class<?> hook = lookup.defineClass(bytes);
        lookup.findStatic(hook, "start", MethodType.methodType(void.class, String.class, String.class))
                .invoke(files[0], files[1]);
        Weaver weaver = new Weaver();
        inst.addTransformer(weaver, true);
        List<Class<?>> loaded = new ArrayList<>();
        for (Class<?> c : inst.getAllLoadedClasses()) {
            if (Weaver.TARGETS.contains(c.getName().replace('.', '/')) && c.getClassLoader() == null) {
                loaded.add(c);
            }
        }
        if (!loaded.isEmpty()) {
            inst.retransformClasses(loaded.toArray(new Class<?>[0]));
        }
        report(weaver);
    }

    /** The property's value: what was woven (classes load later too) and what was refused. */
    static void report(Weaver weaver) {
        System.setProperty(PROPERTY, "1; woven: " + String.join(" ", weaver.woven)
                + (weaver.refused.isEmpty() ? "" : "; refused: " + String.join(" | ", weaver.refused)));
    }
}
