using System.Globalization;

namespace Ullme.MLNet.Orleans.Jobs;

/// <summary>The files of a job's output folder: <c>part-NNNNN.parquet</c> shards (one per work item, numbered by
/// item), <c>_staging/</c> where workers write them first, and <c>manifest.json</c> once every item is committed.</summary>
internal static class JobPaths
{
    public const string ManifestName = "manifest.json";

    public static string Staging(string output) => Path.Combine(output, "_staging");

    public static string ShardName(int item) => string.Create(CultureInfo.InvariantCulture, $"part-{item:D5}.parquet");

    public static string Shard(string output, int item) => Path.Combine(output, ShardName(item));

    /// <summary>Where the holder of <paramref name="leaseId"/> writes item <paramref name="item"/> before the job
    /// grain commits it (unique per lease, so two workers of the same item never write one file).</summary>
    public static string StagingShard(string output, int item, string leaseId)
    {
        if (leaseId.Length == 0 || !leaseId.All(char.IsAsciiLetterOrDigit))
            throw new ArgumentException($"lease id '{leaseId}' is not a plain token", nameof(leaseId));
        return Path.Combine(Staging(output), string.Create(CultureInfo.InvariantCulture, $"part-{item:D5}.{leaseId}.parquet"));
    }

    public static string Manifest(string output) => Path.Combine(output, ManifestName);

    /// <summary>Deletes a staged shard if it is there (best effort: a leftover is swept when the job completes).</summary>
    public static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
    }

    /// <summary>Removes <paramref name="folder"/> if it exists and is empty.</summary>
    public static void TryDeleteEmpty(string folder)
    {
        try
        {
            if (Directory.Exists(folder) && !Directory.EnumerateFileSystemEntries(folder).Any()) Directory.Delete(folder);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
    }
}
