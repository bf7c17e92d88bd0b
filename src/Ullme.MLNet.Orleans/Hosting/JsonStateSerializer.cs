using System.Text.Json;
using Orleans.Storage;

namespace Ullme.MLNet.Orleans.Hosting;

/// <summary>Job state as JSON (System.Text.Json), the same in the folder storage and in PostgreSQL, so a person can
/// read it and a later version can migrate it.</summary>
internal sealed class JsonStateSerializer : IGrainStorageSerializer
{
    private static readonly JsonSerializerOptions Options = new() { WriteIndented = false };

    public static readonly JsonStateSerializer Instance = new();

    public BinaryData Serialize<T>(T? input) => BinaryData.FromBytes(JsonSerializer.SerializeToUtf8Bytes(input, Options));

    public T Deserialize<T>(BinaryData input) =>
        JsonSerializer.Deserialize<T>(input.ToMemory().Span, Options) ?? throw new InvalidOperationException($"stored {typeof(T).Name} is null");
}
