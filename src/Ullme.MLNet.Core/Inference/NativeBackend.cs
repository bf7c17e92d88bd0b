using static TorchSharp.torch;

namespace Ullme.MLNet.Inference;

/// <summary>
/// The native libtorch backend. The library references only the managed <c>TorchSharp</c> package; the application
/// chooses the native one (CPU or CUDA). Without any, TorchSharp's first call fails deep inside a type initializer
/// (a <see cref="TypeInitializationException"/> with a loader trace that crashes an application that does not catch
/// it). <see cref="Ensure"/> makes that one <see cref="UllmeException"/> naming the packages to add; it runs at the
/// engine's first torch use (<c>UllmeModel.Load</c>, <see cref="UllmeRuntime.SetThreads"/>) and remembers its answer.
/// </summary>
internal static class NativeBackend
{
    /// <summary>The TorchSharp version this library is built against (Directory.Packages.props).</summary>
    public const string TorchSharpVersion = "0.107.0";

    /// <summary>The libtorch version of the native packages that match <see cref="TorchSharpVersion"/>.</summary>
    public const string LibTorchVersion = "2.10.0";

    private static readonly Lazy<UllmeException?> Failure = new(Probe, LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>Throws an <see cref="UllmeException"/> naming the packages to add when no native backend loads.</summary>
    /// <summary>Whether libtorch has been loaded (or its loading tried) through <see cref="Ensure"/>.
    /// On Linux also true when the process has mapped libtorch or an OpenMP runtime by any other route.</summary>
    public static bool Loaded => Failure.IsValueCreated || MappedNatively();

    private static bool MappedNatively()
    {
        if (!OperatingSystem.IsLinux()) return false;
        try
        {
            return File.ReadLines("/proc/self/maps").Any(l => l.Contains("libtorch_cpu", StringComparison.Ordinal) || l.Contains("libgomp", StringComparison.Ordinal));
        }
        catch (IOException)
        {
            return false;
        }
    }

    public static void Ensure()
    {
        if (Failure.Value is { } e) throw new UllmeException(e.Message, e.InnerException ?? e);
    }

    /// <summary>The message for a missing backend (also used by the docs and tests).</summary>
    public static string MissingMessage(string? detail) =>
        "The native libtorch backend that Ullme.MLNet computes with is not installed: the application references only " +
        "the managed TorchSharp package. Add a backend package to the application's project, for example " +
        $"'dotnet add package TorchSharp-cpu --version {TorchSharpVersion}' (CPU, Linux/Windows/macOS), or " +
        $"'dotnet add package libtorch-cpu-linux-x64 --version {LibTorchVersion}' (CPU, Linux x64 only), or " +
        $"TorchSharp-cuda-linux / TorchSharp-cuda-windows {TorchSharpVersion} for NVIDIA GPUs." +
        (string.IsNullOrWhiteSpace(detail) ? "" : $" (TorchSharp: {detail})");

    private static UllmeException? Probe()
    {
        try
        {
            _ = get_num_threads(); // loads libtorch through TorchSharp's native loader
            return null;
        }
        catch (Exception e) when (IsMissingNative(e))
        {
            return new UllmeException(MissingMessage(FirstLine(Innermost(e).Message)), e);
        }
    }

    /// <summary>Whether <paramref name="e"/> (or an exception inside it) says that a native torch library is missing.</summary>
    internal static bool IsMissingNative(Exception e)
    {
        for (Exception? x = e; x is not null; x = x.InnerException)
        {
            if (x is DllNotFoundException) return true;
            if (x is TypeInitializationException t && (t.TypeName ?? "").StartsWith("TorchSharp", StringComparison.Ordinal)) return true;
            if (x is NotSupportedException && (x.Message.Contains("libtorch", StringComparison.OrdinalIgnoreCase)
                || x.Message.Contains("LibTorchSharp", StringComparison.Ordinal))) return true;
        }
        return false;
    }

    private static Exception Innermost(Exception e)
    {
        while (e.InnerException is not null) e = e.InnerException;
        return e;
    }

    private static string FirstLine(string s)
    {
        string line = s.Split('\n', 2)[0].Trim();
        return line.Length > 300 ? line[..300] + "..." : line;
    }
}
