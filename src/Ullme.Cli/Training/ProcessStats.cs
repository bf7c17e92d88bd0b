namespace Ullme.Cli.Training;

/// <summary>Figures recorded with every run so throughput numbers can be judged: peak resident memory and the
/// machine's load (Linux /proc; null elsewhere).</summary>
internal static class ProcessStats
{
    /// <summary>Peak resident set size of this process in MiB (VmHWM), or null.</summary>
    public static double? PeakRssMiB() => Status("VmHWM:") is long kb ? kb / 1024.0 : null;

    /// <summary>The 1/5/15-minute load averages ("0.52 1.10 2.00"), or null.</summary>
    public static string? LoadAverage()
    {
        try
        {
            var parts = File.ReadAllText("/proc/loadavg").Split(' ');
            return parts.Length >= 3 ? string.Join(' ', parts.Take(3)) : null;
        }
        catch (IOException) { return null; }
        catch (UnauthorizedAccessException) { return null; }
    }

    private static long? Status(string key)
    {
        try
        {
            foreach (string line in File.ReadLines("/proc/self/status"))
                if (line.StartsWith(key, StringComparison.Ordinal) && long.TryParse(line[key.Length..].Trim().Split(' ')[0], out long kb))
                    return kb;
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return null;
    }
}
