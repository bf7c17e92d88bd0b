using System.Diagnostics;
using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace Ullme.MLNet.Benchmarks.Infrastructure;

/// <summary>What the figures were measured on: cores, CPU model and features, load, memory, thread settings.</summary>
public static class Machine
{
    public static Dictionary<string, object?> Describe(int threads)
    {
        string cpuinfo = File.Exists("/proc/cpuinfo") ? File.ReadAllText("/proc/cpuinfo") : "";
        string model = cpuinfo.Split('\n').FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim() ?? RuntimeInformation.ProcessArchitecture.ToString();
        string flags = cpuinfo.Split('\n').FirstOrDefault(l => l.StartsWith("flags", StringComparison.Ordinal)) ?? "";
        string[] interesting = ["avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni", "fma"];
        return new Dictionary<string, object?>
        {
            ["cpu_model"] = model,
            ["logical_cores"] = Environment.ProcessorCount,
            ["cpu_features"] = string.Join(' ', interesting.Where(f => flags.Contains(' ' + f + ' ', StringComparison.Ordinal) || flags.EndsWith(' ' + f, StringComparison.Ordinal))),
            ["memory_total_gib"] = Math.Round(MemInfo("MemTotal:") / 1024.0 / 1024.0, 1),
            ["memory_available_gib_at_start"] = Math.Round(MemInfo("MemAvailable:") / 1024.0 / 1024.0, 1),
            ["load_average_at_start"] = LoadAverage(),
            ["os"] = RuntimeInformation.OSDescription,
            ["dotnet"] = RuntimeInformation.FrameworkDescription,
            ["torchsharp"] = typeof(TorchSharp.torch).Assembly.GetName().Version?.ToString(),
            ["onnxruntime"] = typeof(Microsoft.ML.OnnxRuntime.InferenceSession).Assembly.GetName().Version?.ToString(),
            ["threads_requested"] = threads,
            ["torch_intra_op_threads"] = get_num_threads(),
            ["torch_inter_op_threads"] = get_num_interop_threads(),
            ["omp_wait_policy"] = Ullme.MLNet.Inference.UllmeRuntime.OmpWaitPolicy,
            ["glibc_mmap_threshold_fixed"] = Ullme.MLNet.Inference.UllmeRuntime.MmapThresholdInstalled,
            ["started_utc"] = DateTime.UtcNow.ToString("u"),
        };
    }

    /// <summary>The 1-, 5- and 15-minute load averages ("0.52 0.58 0.59").</summary>
    public static string LoadAverage() =>
        File.Exists("/proc/loadavg") ? string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "n/a";

    private static long MemInfo(string key)
    {
        if (!File.Exists("/proc/meminfo")) return 0;
        foreach (string line in File.ReadLines("/proc/meminfo"))
            if (line.StartsWith(key, StringComparison.Ordinal))
                return long.Parse(line[key.Length..].Trim().Split(' ')[0]);
        return 0;
    }
}

/// <summary>Resident memory of this process (Linux /proc): current RSS and the peak since the last reset.</summary>
public static class Memory
{
    public static long RssBytes() => Status("VmRSS:");

    public static long PeakBytes() => Status("VmHWM:");

    /// <summary>Resets the peak (VmHWM) to the current RSS: writing 5 to clear_refs (Linux 4.0+). Also collects
    /// managed garbage first so the baseline is honest.</summary>
    public static void ResetPeak()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        try { File.WriteAllText("/proc/self/clear_refs", "5"); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    public static double Mib(long bytes) => Math.Round(bytes / (1024.0 * 1024.0), 0);

    private static long Status(string key)
    {
        if (!File.Exists("/proc/self/status")) return 0;
        foreach (string line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith(key, StringComparison.Ordinal))
                return long.Parse(line[key.Length..].Trim().Split(' ')[0]) * 1024;
        return 0;
    }
}

/// <summary>Wall-clock timing on a noisy host: a warm-up call, then repeated calls until a time budget or a repeat
/// cap is reached; the median call is reported (robust against a neighbour's burst), the best too.</summary>
public static class Timing
{
    public readonly record struct Result(double MedianSeconds, double BestSeconds, int Repeats);

    public static Result Measure(Action run, double budgetSeconds, int minRepeats = 1, int maxRepeats = 20, bool warmup = true)
    {
        if (warmup) run();
        var times = new List<double>();
        var total = Stopwatch.StartNew();
        while (times.Count < minRepeats || (times.Count < maxRepeats && total.Elapsed.TotalSeconds < budgetSeconds))
        {
            var sw = Stopwatch.StartNew();
            run();
            times.Add(sw.Elapsed.TotalSeconds);
        }
        times.Sort();
        return new Result(times[times.Count / 2], times[0], times.Count);
    }
}
