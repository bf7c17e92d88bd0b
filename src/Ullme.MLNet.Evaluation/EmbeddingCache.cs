using Ullme.MLNet.Inference;

namespace Ullme.MLNet.Evaluation;

/// <summary>
/// Remembers embeddings by (source <see cref="ITextEmbeddingSource.CacheKey"/>, instruction, text), so a text that
/// occurs in several tasks, splits or sides of a pair is embedded once per run. Only the missing, de-duplicated
/// texts of a request reach the source, in one call, so the engine still batches and length-sorts them.
/// Thread-safe. Vectors are shared, not copied: callers must not modify them.
/// </summary>
internal sealed class EmbeddingCache
{
    private readonly Dictionary<(string Source, string Instruction, string Text), float[]> _entries = new();
    private readonly object _gate = new();

    /// <summary>Texts served from the cache so far.</summary>
    public long Hits { get; private set; }

    /// <summary>Texts sent to a source so far.</summary>
    public long Misses { get; private set; }

    public int Count
    {
        get { lock (_gate) return _entries.Count; }
    }

    public float[][] Embed(ITextEmbeddingSource source, IReadOnlyList<string> texts, string? instruction,
        IProgress<EngineProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        string key = source.CacheKey, instr = instruction ?? "";
        var result = new float[texts.Count][];
        var missing = new List<string>();
        var missingSet = new HashSet<string>(StringComparer.Ordinal);
        lock (_gate)
        {
            for (int i = 0; i < texts.Count; i++)
            {
                if (_entries.TryGetValue((key, instr, texts[i]), out var v)) result[i] = v;
                else if (missingSet.Add(texts[i])) missing.Add(texts[i]);
            }
            Hits += texts.Count - missing.Count;
            Misses += missing.Count;
        }
        if (missing.Count > 0)
        {
            var vectors = source.Embed(missing, instruction, progress, cancellationToken);
            if (vectors.Length != missing.Count)
                throw new InvalidOperationException($"embedder returned {vectors.Length} vectors for {missing.Count} texts");
            lock (_gate)
            {
                for (int i = 0; i < missing.Count; i++) _entries[(key, instr, missing[i])] = vectors[i];
                for (int i = 0; i < texts.Count; i++) result[i] ??= _entries[(key, instr, texts[i])];
            }
        }
        else
        {
            progress?.Report(new EngineProgress(texts.Count, texts.Count, 0));
        }
        return result;
    }

    public void Clear()
    {
        lock (_gate) _entries.Clear();
    }
}
