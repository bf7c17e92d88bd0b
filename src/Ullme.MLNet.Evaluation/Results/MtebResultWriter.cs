using System.Text;
using Ullme.MLNet.IO;

namespace Ullme.MLNet.Evaluation.Results;

/// <summary>
/// Writes results in MTEB's folder layout: <c>&lt;root&gt;/&lt;org&gt;__&lt;model&gt;/&lt;revision&gt;/&lt;Task&gt;.json</c> plus
/// <c>model_meta.json</c> (a '/' in the model name becomes "__"). Each file is written to a temporary name and
/// moved over the target, so a failure never leaves a half-written result; temporary files left by a killed process
/// are removed by the next write to the same file.
/// </summary>
public static class MtebResultWriter
{
    /// <summary>The folder results of <paramref name="modelName"/> at <paramref name="revision"/> go to.</summary>
    public static string ModelFolder(string root, string modelName, string revision) =>
        Path.Combine(root, SafeSegment(modelName.Replace("/", "__", StringComparison.Ordinal), "model name"),
            SafeSegment(revision, "revision"));

    /// <summary>Writes model_meta.json and one file per task; returns the paths written.</summary>
    public static IReadOnlyList<string> Write(string root, ModelMeta meta, IEnumerable<TaskResult> results)
    {
        string folder = ModelFolder(root, meta.Name, meta.Revision);
        Directory.CreateDirectory(folder);
        var written = new List<string>();
        string metaPath = Path.Combine(folder, "model_meta.json");
        WriteAtomic(metaPath, meta.ToJson());
        written.Add(metaPath);
        foreach (var r in results)
        {
            string path = Path.Combine(folder, SafeSegment(r.TaskName, "task name") + ".json");
            WriteAtomic(path, r.ToJson());
            written.Add(path);
        }
        return written;
    }

    internal static void WriteAtomic(string path, string content) =>
        AtomicFile.Write(path, stream =>
        {
            stream.Write(new UTF8Encoding(encoderShouldEmitUTF8Identifier: false).GetBytes(content));
            stream.Flush();
            FaultInjection.Reach("result-write");
        });

    private static string SafeSegment(string s, string what)
    {
        if (string.IsNullOrWhiteSpace(s) || s is "." or ".." || s.IndexOfAny(Path.GetInvalidFileNameChars()) >= 0
            || s.Contains('\\'))
            throw new UllmeException($"{what} '{s}' cannot be used as a folder or file name");
        return s;
    }
}
