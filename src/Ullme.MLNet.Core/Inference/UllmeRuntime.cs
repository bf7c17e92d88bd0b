using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace Ullme.MLNet.Inference;

/// <summary>
/// Process-wide CPU settings of the compute engine (libtorch's thread pools are global to the process, so this is
/// not a per-model option).
/// <para>
/// Why it matters: libtorch runs every operator as a parallel region over its intra-op threads and waits at a barrier
/// at the end. On a dedicated machine, one thread per core is fastest. On a shared or oversubscribed machine (other
/// processes busy, containers with a CPU quota smaller than the visible cores), a barrier waits for the slowest
/// thread, which may be descheduled: small models such as all-MiniLM then run several times faster on one thread.
/// ONNX Runtime has the same trade-off (its <c>IntraOpNumThreads</c>).
/// </para>
/// <para>
/// OpenMP wait policy: libtorch's OpenMP runtime (GNU libgomp) by default lets idle threads spin for a long time at
/// every barrier. When another process holds the core a spinning thread needs, each operator waits for a scheduler
/// quantum: measured on a busy 2-core host, all-MiniLM with 2 threads ran at 25 texts/s with the default policy and at
/// 152 texts/s with <c>OMP_WAIT_POLICY=PASSIVE</c> (1 thread: 120–130 either way). So, unless the process already
/// sets <c>OMP_WAIT_POLICY</c> or <c>GOMP_SPINCOUNT</c>, this assembly sets <c>OMP_WAIT_POLICY=PASSIVE</c> in the
/// native environment when it is loaded — before libtorch is, provided the application touches an Ullme.MLNet type
/// before calling TorchSharp directly. Set <c>OMP_WAIT_POLICY=ACTIVE</c> to get the spinning behaviour back.
/// </para>
/// <para>
/// Memory: libtorch's CPU tensors come from the C allocator. glibc raises its mmap threshold as large blocks are freed,
/// after which activation-sized blocks (a few MB to 32 MB) are carved from heaps that fragment and are not returned
/// to the system, so a forward's peak memory grew with the number of layers although every layer's intermediates were
/// already freed (Qwen2-0.5B shape, batch 16 × 256, float32: +480 MiB over the weights with 1 layer, +827 MiB with 4;
/// 537 MiB still resident afterwards). Unless <c>MALLOC_MMAP_THRESHOLD_</c> is set, this assembly fixes glibc's mmap
/// threshold at <see cref="MmapThresholdBytes"/> when it loads: blocks of 1 MiB and more are then mapped and unmapped
/// individually, the peak is bounded by one layer's working set (+418 MiB with 4 layers) and nothing is retained.
/// </para>
/// </summary>
public static class UllmeRuntime
{
    /// <summary>The OpenMP wait policy this assembly installs when the process has none.</summary>
    public const string DefaultOmpWaitPolicy = "PASSIVE";

    /// <summary>glibc mmap threshold installed at load (see the remarks): 1 MiB.</summary>
    public const int MmapThresholdBytes = 1 << 20;

    /// <summary>Whether this assembly fixed glibc's mmap threshold at <see cref="MmapThresholdBytes"/>.</summary>
    public static bool MmapThresholdInstalled { get; private set; }

    /// <summary>
    /// Whether the CPU has native bfloat16 arithmetic (AVX-512 BF16 or AMX on x86-64; read from /proc/cpuinfo on
    /// Linux, false where unknown). Without it, bfloat16 matmuls are emulated and measured 5–50× slower than float32
    /// (AVX2-only host): choose <see cref="Modeling.ModelDType.BFloat16"/> there only to halve memory, never for speed.
    /// </summary>
    public static bool CpuHasNativeBFloat16 { get; } = DetectNativeBFloat16();

    private static bool DetectNativeBFloat16()
    {
        try
        {
            if (!OperatingSystem.IsLinux() || !File.Exists("/proc/cpuinfo")) return false;
            foreach (string line in File.ReadLines("/proc/cpuinfo"))
                if (line.StartsWith("flags", StringComparison.Ordinal))
                    return line.Split(' ', ':', '\t').Any(f => f is "avx512_bf16" or "amx_bf16");
            return false;
        }
        catch (IOException)
        {
            return false;
        }
    }

    /// <summary>The OMP_WAIT_POLICY in the native environment (what libgomp reads), or null.</summary>
    public static string? OmpWaitPolicy => NativeGetEnv("OMP_WAIT_POLICY");

    /// <summary>The GOMP_SPINCOUNT in the native environment, or null.</summary>
    public static string? GompSpinCount => NativeGetEnv("GOMP_SPINCOUNT");

#pragma warning disable CA2255 // a library module initializer is intended: it must run before libtorch's OpenMP runtime loads
    [ModuleInitializer]
#pragma warning restore CA2255
    internal static void InstallOmpWaitPolicy()
    {
        if (!(OperatingSystem.IsLinux() || OperatingSystem.IsMacOS())) return;
        try
        {
            if (NativeGetEnv("OMP_WAIT_POLICY") is null && NativeGetEnv("GOMP_SPINCOUNT") is null)
                passiveInstalled = setenv("OMP_WAIT_POLICY", DefaultOmpWaitPolicy, 0) == 0;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            // No C library to talk to: keep the runtime's default.
        }
        if (!OperatingSystem.IsLinux()) return;
        try
        {
            const int M_MMAP_THRESHOLD = -3;
            if (NativeGetEnv("MALLOC_MMAP_THRESHOLD_") is null)
                MmapThresholdInstalled = mallopt(M_MMAP_THRESHOLD, MmapThresholdBytes) == 1;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            // Not glibc (e.g. musl): its allocator has no such threshold.
        }
    }

    private static bool passiveInstalled;

    /// <summary>
    /// Gives libtorch's OpenMP threads libgomp's own barrier wait (spin a while, then sleep) instead of the
    /// <see cref="DefaultOmpWaitPolicy"/> this assembly installs: for a dedicated machine, where nothing else needs the
    /// cores. Operators on small tensors end in a barrier every few microseconds; waking a sleeping thread for each
    /// costs more than the operator. Measured on a quiet 2-core host, full fine-tuning of stories260K (92 contrastive
    /// steps of 32 SNLI triplets, 2 threads): 26.7 s passive, 13.5–18.7 s spinning (docs/training.md, training speed).
    /// On a machine whose cores other processes use, spinning threads wait a scheduler quantum at each barrier
    /// instead (docs/performance.md: all-MiniLM 25 texts/s spinning against 152 passive): keep the default there, or
    /// use one thread. <c>ullme train</c> calls this before it loads the model.
    /// </summary>
    /// <returns>True when the spinning wait will be in effect; false when the process set <c>OMP_WAIT_POLICY</c> or
    /// <c>GOMP_SPINCOUNT</c> itself (its choice stands), or libtorch has already been loaded through this library
    /// (libgomp reads the policy once, when it loads), or the C library cannot be reached.</returns>
    public static bool UseSpinningWait()
    {
        lock (Gate)
        {
            if (!passiveInstalled || NativeBackend.Loaded) return false;
            try
            {
                if (unsetenv("OMP_WAIT_POLICY") != 0) return false;
            }
            catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
            {
                return false;
            }
            passiveInstalled = false;
            return true;
        }
    }

    [DllImport("libc", EntryPoint = "unsetenv")]
    private static extern int unsetenv([MarshalAs(UnmanagedType.LPUTF8Str)] string name);

    [DllImport("libc", EntryPoint = "mallopt")]
    private static extern int mallopt(int param, int value);

    private static string? NativeGetEnv(string name)
    {
        if (!(OperatingSystem.IsLinux() || OperatingSystem.IsMacOS())) return Environment.GetEnvironmentVariable(name);
        try
        {
            nint p = getenv(name);
            return p == 0 ? null : Marshal.PtrToStringUTF8(p);
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return Environment.GetEnvironmentVariable(name);
        }
    }

    [DllImport("libc", EntryPoint = "setenv")]
    private static extern int setenv([MarshalAs(UnmanagedType.LPUTF8Str)] string name, [MarshalAs(UnmanagedType.LPUTF8Str)] string value, int overwrite);

    [DllImport("libc", EntryPoint = "getenv")]
    private static extern nint getenv([MarshalAs(UnmanagedType.LPUTF8Str)] string name);

    private static readonly Lock Gate = new();
    private static int? interOpSet;

    /// <summary>Threads libtorch uses inside one operator (matmul, attention, ...).</summary>
    public static int IntraOpThreads { get { NativeBackend.Ensure(); return get_num_threads(); } }

    /// <summary>Threads libtorch uses to run independent operators concurrently.</summary>
    public static int InterOpThreads { get { NativeBackend.Ensure(); return get_num_interop_threads(); } }

    /// <summary>
    /// Sets libtorch's intra-op threads to <paramref name="threads"/> (any time, takes effect for the next operator)
    /// and, the first time it is called in a process, its inter-op threads to <paramref name="interOpThreads"/>
    /// (default 1: the engine runs one forward at a time, so inter-op threads would only compete for cores). libtorch
    /// fixes the inter-op pool once it has started; later calls leave it unchanged.
    /// </summary>
    /// <exception cref="UllmeException">A thread count is below 1, or no native libtorch backend package is referenced.</exception>
    public static void SetThreads(int threads, int interOpThreads = 1)
    {
        if (threads < 1) throw new UllmeException($"threads must be at least 1 (got {threads}).");
        if (threads > Environment.ProcessorCount)
            throw new UllmeException($"threads must be at most {Environment.ProcessorCount}, this machine's cores (got {threads}).");
        if (interOpThreads < 1) throw new UllmeException($"inter-op threads must be at least 1 (got {interOpThreads}).");
        NativeBackend.Ensure();
        lock (Gate)
        {
            if (interOpSet is null)
            {
                try
                {
                    set_num_interop_threads(interOpThreads);
                }
                catch (ExternalException)
                {
                    // The pool already ran work (some other component used libtorch first): keep its size.
                }
                interOpSet = interOpThreads;
            }
            set_num_threads(threads);
        }
    }
}
