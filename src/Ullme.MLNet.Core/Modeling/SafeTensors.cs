using System.Buffers.Binary;
using System.Text.Encodings.Web;
using System.Text.Json;
using TorchSharp;
using Ullme.MLNet.IO;
using static TorchSharp.torch;

namespace Ullme.MLNet.Modeling;

/// <summary>
/// Reading and writing Hugging Face <c>.safetensors</c> files (the format <c>save_pretrained</c> writes), without
/// Python and without loading whole files into managed memory. See <see cref="SafeTensorsFile"/> for the layout.
/// </summary>
internal static class SafeTensors
{
    /// <summary>
    /// Writes <paramref name="tensors"/> to <paramref name="path"/> as safetensors: name-sorted, the header JSON padded
    /// with spaces to a multiple of 8 bytes, <c>"__metadata__"</c> holding <c>"format": "pt"</c> plus
    /// <paramref name="metadata"/>. The file is written to a temporary file in the same folder and renamed over
    /// <paramref name="path"/>, so readers never see a half-written file.
    /// </summary>
    /// <exception cref="UllmeException">A name is empty, repeated or reserved, or a dtype cannot be stored.</exception>
    public static void Save(string path, IReadOnlyList<KeyValuePair<string, Tensor>> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(tensors);
        if (!BitConverter.IsLittleEndian)
            throw new PlatformNotSupportedException("Writing safetensors needs a little-endian machine.");

        var sorted = tensors.OrderBy(kv => kv.Key, StringComparer.Ordinal).ToList();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (name, tensor) in sorted)
        {
            if (string.IsNullOrEmpty(name))
                throw new UllmeException($"Cannot save '{path}': a tensor has an empty name.");
            if (name == "__metadata__")
                throw new UllmeException($"Cannot save '{path}': \"__metadata__\" is reserved and cannot name a tensor.");
            if (!seen.Add(name))
                throw new UllmeException($"Cannot save '{path}': tensor name '{name}' appears twice.");
            ArgumentNullException.ThrowIfNull(tensor, name);
            _ = DTypeName(tensor, name, path);
        }

        // Header: offsets are cumulative byte lengths in name order.
        var buffer = new System.Buffers.ArrayBufferWriter<byte>();
        using (var writer = new Utf8JsonWriter(buffer, new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            writer.WriteStartObject();
            writer.WriteStartObject("__metadata__");
            var meta = new SortedDictionary<string, string>(StringComparer.Ordinal) { ["format"] = "pt" };
            if (metadata is not null)
                foreach (var (k, v) in metadata) meta[k] = v ?? "";
            foreach (var (k, v) in meta) writer.WriteString(k, v);
            writer.WriteEndObject();
            long offset = 0;
            foreach (var (name, tensor) in sorted)
            {
                long bytes = tensor.numel() * tensor.ElementSize;
                writer.WriteStartObject(name);
                writer.WriteString("dtype", DTypeName(tensor, name, path));
                writer.WriteStartArray("shape");
                foreach (long d in tensor.shape) writer.WriteNumberValue(d);
                writer.WriteEndArray();
                writer.WriteStartArray("data_offsets");
                writer.WriteNumberValue(offset);
                writer.WriteNumberValue(offset + bytes);
                writer.WriteEndArray();
                writer.WriteEndObject();
                offset += bytes;
            }
            writer.WriteEndObject();
        }
        int headerLength = (buffer.WrittenCount + 7) / 8 * 8;
        var header = new byte[8 + headerLength];
        BinaryPrimitives.WriteUInt64LittleEndian(header, (ulong)headerLength);
        buffer.WrittenSpan.CopyTo(header.AsSpan(8));
        header.AsSpan(8 + buffer.WrittenCount).Fill((byte)' ');

        try
        {
            AtomicFile.Write(path, stream =>
            {
                stream.Write(header);
                foreach (var (_, tensor) in sorted) WriteData(stream, tensor);
            }, bufferSize: 1 << 20);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new UllmeException($"Cannot write '{path}': {e.Message}", e);
        }
    }

    /// <summary>
    /// Reads every tensor of one file into CPU tensors (floating ones converted to <paramref name="dtype"/> when given).
    /// The caller owns (disposes) the tensors.
    /// </summary>
    public static Dictionary<string, Tensor> LoadAll(string path, ScalarType? dtype = null)
    {
        using var file = SafeTensorsFile.Open(path);
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            foreach (var name in file.Tensors.Keys) result.Add(name, file.Read(name, dtype));
            return result;
        }
        catch
        {
            foreach (var t in result.Values) t.Dispose();
            throw;
        }
    }

    private static string DTypeName(Tensor tensor, string name, string path)
    {
        try
        {
            return SafeTensorsDType.NameOf(tensor.dtype);
        }
        catch (UllmeException)
        {
            throw new UllmeException($"Cannot save tensor '{name}' to '{path}': dtype {tensor.dtype} is not supported (supported: {SafeTensorsDType.SupportedList}).");
        }
    }

    /// <summary>Writes a tensor's raw bytes (row-major, little-endian) chunk by chunk from native memory.</summary>
    private static void WriteData(Stream stream, Tensor tensor)
    {
        long total = tensor.numel();
        if (total == 0) return;
        using var scope = torch.NewDisposeScope();
        var source = tensor.detach();
        if (source.device_type != DeviceType.CPU) source = source.cpu();
        if (!source.is_contiguous()) source = source.contiguous();
        var flat = source.view(-1);
        long chunkElements = Math.Max(1, (64L << 20) / source.ElementSize);
        for (long start = 0; start < total; start += chunkElements)
        {
            using var part = flat.narrow(0, start, Math.Min(chunkElements, total - start));
            stream.Write(part.bytes);
        }
    }
}
