using System.Text;
using System.Text.Json;

namespace Ullme.MLNet.Evaluation.Results;

/// <summary>
/// The subset of MTEB's <c>ModelMeta</c> written as <c>model_meta.json</c> next to the task results. Unknown fields
/// are written as null, as MTEB does for models it knows little about.
/// </summary>
public sealed record ModelMeta
{
    /// <summary>HF-style name, e.g. "sentence-transformers/all-MiniLM-L6-v2" or a folder name.</summary>
    public required string Name { get; init; }

    public string Revision { get; init; } = "no_revision_available";

    public int? EmbedDim { get; init; }

    public int? MaxTokens { get; init; }

    public long? NParameters { get; init; }

    public bool? UseInstructions { get; init; }

    /// <summary>Free-form settings that produced the vectors (pooling, attention, max length, dtype).</summary>
    public IReadOnlyDictionary<string, string> Settings { get; init; } = new Dictionary<string, string>();

    public string ToJson()
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteString("name", Name);
            w.WriteString("revision", Revision);
            w.WriteNull("release_date");
            w.WriteStartArray("languages");
            w.WriteEndArray();
            if (NParameters is long p) w.WriteNumber("n_parameters", p); else w.WriteNull("n_parameters");
            w.WriteNull("memory_usage_mb");
            if (MaxTokens is int mt) w.WriteNumber("max_tokens", mt); else w.WriteNull("max_tokens");
            if (EmbedDim is int d) w.WriteNumber("embed_dim", d); else w.WriteNull("embed_dim");
            w.WriteNull("license");
            w.WriteNull("open_weights");
            w.WriteNull("public_training_code");
            w.WriteNull("public_training_data");
            w.WriteStartArray("framework");
            w.WriteStringValue("Ullme.MLNet");
            w.WriteEndArray();
            w.WriteNull("reference");
            w.WriteString("similarity_fn_name", "cosine");
            if (UseInstructions is bool ui) w.WriteBoolean("use_instructions", ui); else w.WriteNull("use_instructions");
            w.WriteNull("training_datasets");
            w.WriteNull("adapted_from");
            w.WriteNull("superseded_by");
            w.WriteStartObject("loader_kwargs");
            foreach (var (k, v) in Settings) w.WriteString(k, v);
            w.WriteEndObject();
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(buffer.ToArray());
    }
}
