using System.Text.Json;
using System.Text.Json.Serialization;
using Ullme.MLNet.IO;

namespace Ullme.MLNet.Orleans.Jobs;

/// <summary>
/// <c>manifest.json</c> of a completed job: written atomically (temporary + rename) once every item is committed,
/// so its presence means the output is complete. It names every shard with its rows, input range, SHA-256 and size,
/// and the model and options that embedded it.
/// </summary>
internal sealed record JobManifest
{
    public const string FormatName = "ullme.embeddings.v1";

    [JsonPropertyName("format")] public string Format { get; init; } = FormatName;
    [JsonPropertyName("job_id")] public required string JobId { get; init; }
    [JsonPropertyName("model")] public string? Model { get; init; }
    [JsonPropertyName("dimension")] public int Dimension { get; init; }
    [JsonPropertyName("rows")] public long Rows { get; init; }
    [JsonPropertyName("inputs")] public required IReadOnlyList<string> Inputs { get; init; }
    [JsonPropertyName("text_column")] public required string TextColumn { get; init; }
    [JsonPropertyName("id_column")] public string? IdColumn { get; init; }
    [JsonPropertyName("options")] public required ManifestOptions Options { get; init; }
    [JsonPropertyName("shards")] public required IReadOnlyList<ManifestShard> Shards { get; init; }
    [JsonPropertyName("submitted_utc")] public DateTime SubmittedUtc { get; init; }
    [JsonPropertyName("completed_utc")] public DateTime? CompletedUtc { get; init; }

    internal static readonly JsonSerializerOptions Json = new() { WriteIndented = true, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull };

    public static JobManifest From(JobLedger ledger)
    {
        var spec = ledger.Spec!;
        return new JobManifest
        {
            JobId = ledger.JobId,
            Model = ledger.ModelId,
            Dimension = ledger.Dimension,
            Rows = ledger.Items.Sum(i => (long)i.Rows),
            Inputs = spec.Inputs,
            TextColumn = spec.TextColumn,
            IdColumn = spec.IdColumn,
            Options = new ManifestOptions(spec.Pooling, spec.Attention, spec.Instruction, spec.MaxLength, spec.Normalize, spec.Dimensions, spec.BatchSize),
            Shards = ledger.Items.Select((item, i) => new ManifestShard(ledger.Records[i].Shard ?? JobPaths.ShardName(i), item.Rows, item.File, item.StartRow,
                ledger.Records[i].Sha256 ?? "", ledger.Records[i].Bytes, ledger.Records[i].Backend)).ToList(),
            SubmittedUtc = ledger.SubmittedUtc,
            CompletedUtc = ledger.FinishedUtc,
        };
    }

    public static void Write(string output, JobLedger ledger) =>
        AtomicFile.WriteAllText(JobPaths.Manifest(output), JsonSerializer.Serialize(From(ledger), Json));

    public static JobManifest Read(string path)
    {
        try
        {
            return JsonSerializer.Deserialize<JobManifest>(File.ReadAllText(path), Json) ?? throw new UllmeException($"'{path}' is empty.");
        }
        catch (JsonException e)
        {
            throw new UllmeException($"'{path}' is not a job manifest: {e.Message}", e);
        }
    }
}

/// <summary>The embedding options of a job, as the manifest records them (null: the model's default).</summary>
internal sealed record ManifestOptions(
    [property: JsonPropertyName("pooling")] string? Pooling,
    [property: JsonPropertyName("attention")] string? Attention,
    [property: JsonPropertyName("instruction")] string? Instruction,
    [property: JsonPropertyName("max_length")] int? MaxLength,
    [property: JsonPropertyName("normalize")] bool Normalize,
    [property: JsonPropertyName("dimensions")] int? Dimensions,
    [property: JsonPropertyName("batch_size")] int BatchSize);

/// <summary>One committed shard: its file (relative to the manifest), rows, the input range it holds, checksum, size.</summary>
internal sealed record ManifestShard(
    [property: JsonPropertyName("file")] string File,
    [property: JsonPropertyName("rows")] int Rows,
    [property: JsonPropertyName("input")] string Input,
    [property: JsonPropertyName("start_row")] long StartRow,
    [property: JsonPropertyName("sha256")] string Sha256,
    [property: JsonPropertyName("bytes")] long Bytes,
    [property: JsonPropertyName("backend")] string? Backend);
