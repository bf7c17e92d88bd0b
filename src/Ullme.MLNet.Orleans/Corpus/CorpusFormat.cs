namespace Ullme.MLNet.Orleans.Corpus;

/// <summary>The input formats a corpus job reads, told by the file's extension.</summary>
internal enum CorpusFormat
{
    /// <summary><c>.txt</c>: every line is a row, empty lines included; a final newline adds no row.</summary>
    Text,
    /// <summary><c>.jsonl</c> / <c>.ndjson</c>: one JSON object a line; blank lines are not rows.</summary>
    Jsonl,
    /// <summary><c>.csv</c>: RFC 4180 with a header line; blank lines are not rows.</summary>
    Csv,
    /// <summary><c>.tsv</c>: fields split on tabs, quotes literal, a header line; blank lines are not rows.</summary>
    Tsv,
    /// <summary><c>.parquet</c>: rows of a string column.</summary>
    Parquet,
}

internal static class CorpusFormats
{
    /// <summary>The extensions <see cref="Of"/> accepts, for messages.</summary>
    public const string Supported = ".txt, .jsonl, .ndjson, .csv, .tsv, .parquet";

    /// <summary>The format of <paramref name="path"/>, or null for an unsupported extension.</summary>
    public static CorpusFormat? TryOf(string path) => Path.GetExtension(path).ToLowerInvariant() switch
    {
        ".txt" => CorpusFormat.Text,
        ".jsonl" or ".ndjson" => CorpusFormat.Jsonl,
        ".csv" => CorpusFormat.Csv,
        ".tsv" => CorpusFormat.Tsv,
        ".parquet" => CorpusFormat.Parquet,
        _ => null,
    };

    /// <summary>The format of <paramref name="path"/>; an unsupported extension is a <see cref="UllmeException"/>.</summary>
    public static CorpusFormat Of(string path) => TryOf(path) ?? throw new UllmeException(
        $"Input '{path}': unsupported extension '{Path.GetExtension(path)}'. Use {Supported}.");
}
