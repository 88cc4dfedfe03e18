package dev.plainsight.jsse;

import dev.plainsight.jsse.asm.ClassReader;
import dev.plainsight.jsse.asm.ClassVisitor;
import dev.plainsight.jsse.asm.ClassWriter;
import dev.plainsight.jsse.asm.MethodVisitor;
import dev.plainsight.jsse.asm.Opcodes;
import java.lang.instrument.ClassFileTransformer;
import java.security.ProtectionDomain;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashSet;
import java.util.List;
import java.util.Set;

/**
 * Weaves calls to the Hook into JSSE's plaintext boundary:
 * <ul>
 * <li>SSLSocketImpl$AppOutputStream.write(byte[], int, int): at each return, the bytes were sent;
 * <li>SSLSocketImpl$AppInputStream.read(byte[], int, int): at each return, n bytes were read;
 * <li>SSLEngineImpl.wrap/unwrap(ByteBuffer[], int, int, ByteBuffer[], int, int): the plaintext
 *     buffers' positions at entry, the bytes consumed/produced at return (the other overloads call
 *     these);
 * <li>SSLSocketImpl.close(), SSLEngineImpl.closeOutbound(): the end.
 * </ul>
 * Only straight-line code is added (no branch, no local): the methods' stack map frames stay
 * valid, so no class is loaded to compute new ones. The arguments read at a return must be the
 * ones the method was called with: a method that stores into them is left alone and named.
 */
final class Weaver implements ClassFileTransformer {
    static final String HOOK = "sun/security/ssl/PlainsightJsse";
    static final String OUT = "sun/security/ssl/SSLSocketImpl$AppOutputStream";
    static final String IN = "sun/security/ssl/SSLSocketImpl$AppInputStream";
    static final String SOCKET = "sun/security/ssl/SSLSocketImpl";
    static final String ENGINE = "sun/security/ssl/SSLEngineImpl";
    static final Set<String> TARGETS = Set.of(OUT, IN, SOCKET, ENGINE);
    private static final String ENGINE_CALL =
            "([Ljava/nio/ByteBuffer;II[Ljava/nio/ByteBuffer;II)Ljavax/net/ssl/SSLEngineResult;";
    /** The newest class file version the ASM in use reads (Java 20). */
    private static final int ASM_MAX_MAJOR = 64;

    /** What was woven and what was refused, for the agent's log. */
    final List<String> woven = Collections.synchronizedList(new ArrayList<>());
    final List<String> refused = Collections.synchronizedList(new ArrayList<>());

    @Override
    public byte[] transform(Module module, ClassLoader loader, String name, Class<?> redefined,
                            ProtectionDomain pd, byte[] bytes) {
        if (loader != null || name == null || !TARGETS.contains(name)) {
            return null;
        }
        try {
            return weave(name, bytes);
        } catch (Throwable t) {
            refused.add(name + ": " + t);
            return null;
        } finally {
            Agent.report(this);
        }
    }

    private byte[] weave(String name, byte[] original) {
        // A newer class file than ASM knows: read it as the newest it knows
        // and write the original version back. Only methods of JSSE are
        // changed; their instructions are older than the version number.
        int major = ((original[6] & 0xff) << 8) | (original[7] & 0xff);
        byte[] bytes = original;
        if (major > ASM_MAX_MAJOR) {
            bytes = original.clone();
            bytes[6] = (byte) (ASM_MAX_MAJOR >> 8);
            bytes[7] = (byte) ASM_MAX_MAJOR;
        }
        Set<String> unsafe = new HashSet<>();
        new ClassReader(bytes).accept(new ArgumentStores(unsafe), ClassReader.SKIP_FRAMES);
        ClassReader reader = new ClassReader(bytes);
        ClassWriter writer = new ClassWriter(reader, ClassWriter.COMPUTE_MAXS);
        Rewriter rw = new Rewriter(writer, name, unsafe, major);
        reader.accept(rw, 0);
        if (rw.count == 0) {
            return null;
        }
        return writer.toByteArray();
    }

    /** The number of argument slots (after `this`) of a descriptor. */
    static int argumentSlots(String desc) {
        int slots = 0;
        int i = 1;
        while (desc.charAt(i) != ')') {
            char c = desc.charAt(i);
            if (c == 'J' || c == 'D') {
                slots += 2;
                i++;
            } else if (c == 'L') {
                slots++;
                i = desc.indexOf(';', i) + 1;
            } else if (c == '[') {
                while (desc.charAt(i) == '[') {
                    i++;
                }
                if (desc.charAt(i) == 'L') {
                    i = desc.indexOf(';', i);
                }
                i++;
                slots++;
            } else {
                slots++;
                i++;
            }
        }
        return slots;
    }

    /** Finds methods that store into one of their argument slots. */
    private static final class ArgumentStores extends ClassVisitor {
        final Set<String> unsafe;

        ArgumentStores(Set<String> unsafe) {
            super(Opcodes.ASM9);
            this.unsafe = unsafe;
        }

        @Override
        public MethodVisitor visitMethod(int access, String name, String desc, String sig, String[] exc) {
            int args = argumentSlots(desc);
            String key = name + desc;
            return new MethodVisitor(Opcodes.ASM9) {
                @Override
                public void visitVarInsn(int opcode, int var) {
                    if (opcode >= Opcodes.ISTORE && opcode <= Opcodes.ASTORE && var >= 1 && var <= args) {
                        unsafe.add(key);
                    }
                }

                @Override
                public void visitIincInsn(int var, int inc) {
                    if (var >= 1 && var <= args) {
                        unsafe.add(key);
                    }
                }
            };
        }
    }

    /** Adds the Hook calls to the methods of one class. */
    private final class Rewriter extends ClassVisitor {
        final String owner;
        final Set<String> unsafe;
        final int major;
        int count;

        Rewriter(ClassVisitor next, String owner, Set<String> unsafe, int major) {
            super(Opcodes.ASM9, next);
            this.owner = owner;
            this.unsafe = unsafe;
            this.major = major;
        }

        @Override
        public void visit(int version, int access, String name, String sig, String sup, String[] ifs) {
            // The original major version (see weave), its minor kept.
            super.visit((version & 0xffff0000) | major, access, name, sig, sup, ifs);
        }

        /** The stream classes' field for their socket (fields come before methods). */
        boolean hasOuter;

        @Override
        public dev.plainsight.jsse.asm.FieldVisitor visitField(int access, String name, String desc,
                                                                String sig, Object value) {
            if (name.equals("this$0") && desc.equals("L" + SOCKET + ";")) {
                hasOuter = true;
            }
            return super.visitField(access, name, desc, sig, value);
        }

        @Override
        public MethodVisitor visitMethod(int access, String name, String desc, String sig, String[] exc) {
            MethodVisitor mv = super.visitMethod(access, name, desc, sig, exc);
            Kind kind = kindOf(name, desc);
            if (kind == null) {
                return mv;
            }
            String what = owner.substring(owner.lastIndexOf('/') + 1) + "." + name + desc;
            if ((kind == Kind.SOCKET_WRITE || kind == Kind.SOCKET_READ) && !hasOuter) {
                refused.add(what + ": no this$0 field for its socket");
                return mv;
            }
            if (kind.readsArgumentsAtReturn && unsafe.contains(name + desc)) {
                refused.add(what + ": it changes its arguments");
                return mv;
            }
            count++;
            woven.add(what);
            return new Calls(mv, kind);
        }

        private Kind kindOf(String name, String desc) {
            switch (owner) {
                case OUT:
                    return name.equals("write") && desc.equals("([BII)V") ? Kind.SOCKET_WRITE : null;
                case IN:
                    return name.equals("read") && desc.equals("([BII)I") ? Kind.SOCKET_READ : null;
                case SOCKET:
                    return name.equals("close") && desc.equals("()V") ? Kind.CLOSE : null;
                case ENGINE:
                    if (desc.equals(ENGINE_CALL)) {
                        return name.equals("wrap") ? Kind.WRAP : name.equals("unwrap") ? Kind.UNWRAP : null;
                    }
                    return name.equals("closeOutbound") && desc.equals("()V") ? Kind.CLOSE : null;
                default:
                    return null;
            }
        }

        private final class Calls extends MethodVisitor {
            final Kind kind;

            Calls(MethodVisitor next, Kind kind) {
                super(Opcodes.ASM9, next);
                this.kind = kind;
            }

            @Override
            public void visitCode() {
                super.visitCode();
                switch (kind) {
                    case CLOSE:
                        super.visitVarInsn(Opcodes.ALOAD, 0);
                        hook("closed", "(Ljava/lang/Object;)V");
                        break;
                    case WRAP:
                        enter(1);
                        break;
                    case UNWRAP:
                        enter(4);
                        break;
                    default:
                        break;
                }
            }

            /** Hook.engineEnter(this, bufs, off, len) with the buffers at `slot`. */
            private void enter(int slot) {
                super.visitVarInsn(Opcodes.ALOAD, 0);
                super.visitVarInsn(Opcodes.ALOAD, slot);
                super.visitVarInsn(Opcodes.ILOAD, slot + 1);
                super.visitVarInsn(Opcodes.ILOAD, slot + 2);
                hook("engineEnter", "(Ljava/lang/Object;[Ljava/nio/ByteBuffer;II)V");
            }

            @Override
            public void visitInsn(int opcode) {
                if (opcode == Opcodes.RETURN && kind == Kind.SOCKET_WRITE) {
                    outer();
                    super.visitVarInsn(Opcodes.ALOAD, 1);
                    super.visitVarInsn(Opcodes.ILOAD, 2);
                    super.visitVarInsn(Opcodes.ILOAD, 3);
                    hook("socketWrite", "(Ljava/lang/Object;[BII)V");
                } else if (opcode == Opcodes.IRETURN && kind == Kind.SOCKET_READ) {
                    super.visitInsn(Opcodes.DUP);
                    outer();
                    super.visitVarInsn(Opcodes.ALOAD, 1);
                    super.visitVarInsn(Opcodes.ILOAD, 2);
                    hook("socketRead", "(ILjava/lang/Object;[BI)V");
                } else if (opcode == Opcodes.ARETURN && (kind == Kind.WRAP || kind == Kind.UNWRAP)) {
                    int slot = kind == Kind.WRAP ? 1 : 4;
                    super.visitInsn(Opcodes.DUP);
                    super.visitVarInsn(Opcodes.ALOAD, 0);
                    super.visitVarInsn(Opcodes.ALOAD, slot);
                    super.visitVarInsn(Opcodes.ILOAD, slot + 1);
                    super.visitVarInsn(Opcodes.ILOAD, slot + 2);
                    hook(kind == Kind.WRAP ? "engineWrap" : "engineUnwrap",
                         "(Ljavax/net/ssl/SSLEngineResult;Ljava/lang/Object;[Ljava/nio/ByteBuffer;II)V");
                }
                super.visitInsn(opcode);
            }

            /** The stream's SSLSocketImpl (an inner class's this$0). */
            private void outer() {
                super.visitVarInsn(Opcodes.ALOAD, 0);
                super.visitFieldInsn(Opcodes.GETFIELD, owner, "this$0", "L" + SOCKET + ";");
            }

            private void hook(String method, String desc) {
                super.visitMethodInsn(Opcodes.INVOKESTATIC, HOOK, method, desc, false);
            }
        }
    }

    enum Kind {
        SOCKET_WRITE(true), SOCKET_READ(true), WRAP(true), UNWRAP(true), CLOSE(false);

        final boolean readsArgumentsAtReturn;

        Kind(boolean readsArgumentsAtReturn) {
            this.readsArgumentsAtReturn = readsArgumentsAtReturn;
        }
    }
}
