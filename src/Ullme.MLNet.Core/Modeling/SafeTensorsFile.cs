using System.Text.Json;
using Microsoft.Win32.SafeHandles;
using TorchSharp;
using static TorchSharp.torch;

namespace Ullme.MLNet.Modeling;

/// <summary>
/// Where one tensor lives in a safetensors file: its dtype string ("F32", "BF16", ...), shape, and byte range
/// [<see cref="Begin"/>, <see cref="End"/>) relative to the start of the data section (the end of the header).
/// </summary>
internal sealed record SafeTensorInfo(string Name, string DType, long[] Shape, long Begin, long End)
{
    /// <summary>Number of elements (the product of the shape; 1 for a scalar).</summary>
    public long ElementCount => Shape.Aggregate(1L, (a, b) => a * b);

    /// <summary>Byte length of the tensor's data.</summary>
    public long ByteLength => End - Begin;

    /// <summary>The torch element type the bytes are stored in.</summary>
    public ScalarType ScalarType => SafeTensorsDType.TryGet(DType, out var t, out _) ? t : throw new InvalidOperationException(DType);

    /// <summary>Shape as "[a, b]" for messages.</summary>
    public string ShapeText => FormatShape(Shape);

    internal static string FormatShape(IEnumerable<long> shape) => "[" + string.Join(", ", shape) + "]";
}

/// <summary>
/// One opened <c>.safetensors</c> file. The format is simple: an 8-byte little-endian header length N, N bytes of
/// JSON mapping each tensor name to <c>{"dtype", "shape", "data_offsets": [begin, end]}</c> (plus an optional
/// string-to-string <c>"__metadata__"</c>), then the raw little-endian tensor bytes.
/// <para>
/// Opening parses and strictly validates the header only; <see cref="Read(string, ScalarType?)"/> then copies one tensor's bytes straight
/// from the file into a freshly allocated CPU tensor, so a multi-GB checkpoint never passes through managed memory
/// and can be loaded tensor by tensor.
/// </para>
/// </summary>
internal sealed class SafeTensorsFile : IDisposable
{
    /// <summary>Headers larger than this are rejected as corrupt (real ones are a few hundred KB at most).</summary>
    public const long MaxHeaderBytes = 100L * 1024 * 1024;

    /// <summary>Bytes copied per read call (a tensor larger than this is read in several chunks).</summary>
    private const int DefaultChunkBytes = 64 * 1024 * 1024;

    private readonly SafeFileHandle _handle;
    private readonly long _dataStart;

    private SafeTensorsFile(string path, SafeFileHandle handle, long dataStart,
        IReadOnlyDictionary<string, SafeTensorInfo> tensors, IReadOnlyDictionary<string, string> metadata)
    {
        Path = path;
        _handle = handle;
        _dataStart = dataStart;
        Tensors = tensors;
        Metadata = metadata;
    }

    /// <summary>The file's path as given to <see cref="Open"/>.</summary>
    public string Path { get; }

    /// <summary>Every tensor in the file by name (in header order).</summary>
    public IReadOnlyDictionary<string, SafeTensorInfo> Tensors { get; }

    /// <summary>The <c>__metadata__</c> block (empty when absent).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>Opens <paramref name="path"/> and parses and validates its header.</summary>
    /// <exception cref="UllmeException">The file is missing, truncated or its header is malformed.</exception>
    public static SafeTensorsFile Open(string path)
    {
        if (!BitConverter.IsLittleEndian)
            throw new PlatformNotSupportedException("Reading safetensors needs a little-endian machine.");
        if (!IO.ModelFileGuard.Exists(path, IO.ModelFileGuard.Unbounded))
            throw new UllmeException($"Safetensors file '{path}' does not exist.");
        // A device, pipe or link loop is refused before open() (a FIFO's open would block; /dev/zero never ends).
        IO.ModelFileGuard.Check(path, IO.ModelFileGuard.Unbounded);

        SafeFileHandle handle;
        try
        {
            handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read, FileOptions.RandomAccess);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new UllmeException($"Cannot open safetensors file '{path}': {e.Message}", e);
        }

        try
        {
            var (dataStart, tensors, metadata) = ReadHeader(path, handle);
            return new SafeTensorsFile(path, handle, dataStart, tensors, metadata);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Reads one tensor into a new CPU tensor. Floating tensors are converted to <paramref name="dtype"/> when given
    /// (integer and bool tensors keep their type). The caller owns (disposes) the result.
    /// </summary>
    public Tensor Read(string name, ScalarType? dtype = null) => Read(name, dtype, DefaultChunkBytes);

    /// <summary><see cref="Read(string, ScalarType?)"/> with a given read-chunk size (tests use small ones).</summary>
    internal Tensor Read(string name, ScalarType? dtype, int chunkBytes)
    {
        ObjectDisposedException.ThrowIf(_handle.IsClosed, this);
        if (!Tensors.TryGetValue(name, out var info))
            throw new UllmeException($"Tensor '{name}' is not in safetensors file '{Path}'.");
        SafeTensorsDType.TryGet(info.DType, out var stored, out _);

        var tensor = torch.empty(info.Shape, dtype: stored, device: CPU);
        try
        {
            if (info.ByteLength > 0) FillFromFile(tensor, info, chunkBytes);
            if (dtype is { } target && target != stored && SafeTensorsDType.IsFloating(stored))
            {
                var converted = tensor.to(target);
                tensor.Dispose();
                tensor = converted;
            }
            return tensor;
        }
        catch (Exception e)
        {
            tensor.Dispose();
            if (e is UllmeException) throw;
            throw new UllmeException($"Cannot read tensor '{name}' from '{Path}': {e.Message}", e);
        }
    }

    /// <summary>
    /// Reads a tensor straight into <paramref name="destination"/>'s memory (no temporary): the destination must be a
    /// contiguous CPU tensor of the stored dtype and shape. Used to fill parameters in place.
    /// </summary>
    internal void ReadInto(string name, Tensor destination)
    {
        ObjectDisposedException.ThrowIf(_handle.IsClosed, this);
        var info = Tensors[name];
        if (destination.device_type != DeviceType.CPU || !destination.is_contiguous() || destination.dtype != info.ScalarType
            || !destination.shape.SequenceEqual(info.Shape))
            throw new InvalidOperationException($"Cannot read '{name}' in place into a {destination.dtype} tensor of shape {SafeTensorInfo.FormatShape(destination.shape)} on {destination.device}.");
        if (info.ByteLength > 0) FillFromFile(destination, info, DefaultChunkBytes);
    }

    /// <summary>Copies the tensor's bytes from the file straight into the (contiguous, CPU) tensor's storage.</summary>
    private void FillFromFile(Tensor tensor, SafeTensorInfo info, int chunkBytes)
    {
        int elementSize = (int)tensor.ElementSize;
        long chunkElements = Math.Max(1, chunkBytes / elementSize);
        long total = tensor.numel();
        long fileOffset = _dataStart + info.Begin;
        using var flat = tensor.view(-1);
        for (long start = 0; start < total; start += chunkElements)
        {
            long count = Math.Min(chunkElements, total - start);
            using var part = flat.narrow(0, start, count);
            Span<byte> span = part.bytes; // the chunk's native memory, no copy
            while (!span.IsEmpty)
            {
                int n = RandomAccess.Read(_handle, span, fileOffset);
                if (n <= 0)
                    throw new UllmeException($"Safetensors file '{Path}' ended while reading tensor '{info.Name}' (the file is truncated or was changed after it was opened).");
                fileOffset += n;
                span = span[n..];
            }
        }
    }

    public void Dispose() => _handle.Dispose();

    private static (long DataStart, IReadOnlyDictionary<string, SafeTensorInfo> Tensors, IReadOnlyDictionary<string, string> Metadata)
        ReadHeader(string path, SafeFileHandle handle)
    {
        long fileLength = RandomAccess.GetLength(handle);
        if (fileLength < 8)
            throw new UllmeException($"'{path}' is not a safetensors file: it is {fileLength} bytes long, shorter than the 8-byte header length.");

        Span<byte> lengthBytes = stackalloc byte[8];
        ReadExactly(handle, lengthBytes, 0, path);
        ulong headerLength = System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(lengthBytes);
        if (headerLength > (ulong)MaxHeaderBytes)
            throw new UllmeException($"'{path}' is not a valid safetensors file: its header length ({headerLength} bytes) exceeds the {MaxHeaderBytes / (1024 * 1024)} MB limit (corrupt file or not safetensors).");
        if ((long)headerLength > fileLength - 8)
            throw new UllmeException($"'{path}' is not a valid safetensors file: its header length ({headerLength} bytes) goes beyond the end of the {fileLength}-byte file (truncated download?).");
        if (headerLength == 0)
            throw new UllmeException($"'{path}' is not a valid safetensors file: its header is empty.");

        var headerBytes = new byte[headerLength];
        ReadExactly(handle, headerBytes, 8, path);
        long dataStart = 8 + (long)headerLength;
        long dataLength = fileLength - dataStart;

        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(headerBytes, new JsonDocumentOptions { MaxDepth = 16 });
        }
        catch (JsonException e)
        {
            throw new UllmeException($"'{path}' is not a valid safetensors file: its header is not valid JSON ({e.Message}).", e);
        }

        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new UllmeException($"'{path}' is not a valid safetensors file: its header is a JSON {doc.RootElement.ValueKind}, not an object.");

            var tensors = new Dictionary<string, SafeTensorInfo>(StringComparer.Ordinal);
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            bool sawMetadata = false;
            foreach (var property in doc.RootElement.EnumerateObject())
            {
                string name = property.Name;
                if (name == "__metadata__")
                {
                    if (sawMetadata)
                        throw new UllmeException($"'{path}': the safetensors header has \"__metadata__\" twice.");
                    sawMetadata = true;
                    ParseMetadata(path, property.Value, metadata);
                    continue;
                }
                if (tensors.ContainsKey(name))
                    throw new UllmeException($"'{path}': tensor '{name}' appears twice in the safetensors header.");
                tensors.Add(name, ParseEntry(path, name, property.Value, dataLength));
            }

            CheckOverlaps(path, tensors.Values);
            return (dataStart, tensors, metadata);
        }
    }

    private static void ParseMetadata(string path, JsonElement value, Dictionary<string, string> metadata)
    {
        if (value.ValueKind == JsonValueKind.Null) return;
        if (value.ValueKind != JsonValueKind.Object)
            throw new UllmeException($"'{path}': the safetensors \"__metadata__\" must be an object of strings, not a JSON {value.ValueKind}.");
        foreach (var item in value.EnumerateObject())
        {
            // The format says string -> string; some writers put numbers or objects there, which we keep as JSON text.
            metadata[item.Name] = item.Value.ValueKind == JsonValueKind.String ? item.Value.GetString()! : item.Value.GetRawText();
        }
    }

    private static SafeTensorInfo ParseEntry(string path, string name, JsonElement entry, long dataLength)
    {
        string where = $"tensor '{name}' in '{path}'";
        if (entry.ValueKind != JsonValueKind.Object)
            throw new UllmeException($"Malformed safetensors header: {where} is a JSON {entry.ValueKind}, not an object with dtype, shape and data_offsets.");

        if (!entry.TryGetProperty("dtype", out var dtypeElement) || dtypeElement.ValueKind != JsonValueKind.String)
            throw new UllmeException($"Malformed safetensors header: {where} has no \"dtype\" string.");
        string dtype = dtypeElement.GetString()!;
        if (!SafeTensorsDType.TryGet(dtype, out _, out int elementSize))
        {
            string why = SafeTensorsDType.IsKnownButUnsupported(dtype) ? "is not supported" : "is unknown";
            throw new UllmeException($"Tensor '{name}' in '{path}' has dtype \"{dtype}\", which {why} (supported: {SafeTensorsDType.SupportedList}).");
        }

        if (!entry.TryGetProperty("shape", out var shapeElement) || shapeElement.ValueKind != JsonValueKind.Array)
            throw new UllmeException($"Malformed safetensors header: {where} has no \"shape\" array.");
        var shape = new long[shapeElement.GetArrayLength()];
        int i = 0;
        foreach (var dim in shapeElement.EnumerateArray())
        {
            if (dim.ValueKind != JsonValueKind.Number || !dim.TryGetInt64(out long d) || d < 0)
                throw new UllmeException($"Malformed safetensors header: {where} has a shape entry {dim.GetRawText()} that is not a non-negative integer.");
            shape[i++] = d;
        }

        if (!entry.TryGetProperty("data_offsets", out var offsetsElement) || offsetsElement.ValueKind != JsonValueKind.Array
            || offsetsElement.GetArrayLength() != 2)
            throw new UllmeException($"Malformed safetensors header: {where} has no \"data_offsets\" [begin, end] pair.");
        var offsets = new long[2];
        i = 0;
        foreach (var o in offsetsElement.EnumerateArray())
        {
            if (o.ValueKind != JsonValueKind.Number || !o.TryGetInt64(out long v) || v < 0)
                throw new UllmeException($"Malformed safetensors header: {where} has a data offset {o.GetRawText()} that is not a non-negative integer.");
            offsets[i++] = v;
        }
        long begin = offsets[0], end = offsets[1];
        if (begin > end)
            throw new UllmeException($"Malformed safetensors header: {where} has data_offsets [{begin}, {end}] with begin > end.");
        if (end > dataLength)
            throw new UllmeException($"Safetensors file '{path}' is truncated or corrupt: tensor '{name}' ends at data offset {end} but the data section holds only {dataLength} bytes.");

        long expected;
        try
        {
            expected = checked(shape.Aggregate(1L, (a, b) => checked(a * b)) * elementSize);
        }
        catch (OverflowException)
        {
            throw new UllmeException($"Malformed safetensors header: {where} has an impossibly large shape {SafeTensorInfo.FormatShape(shape)}.");
        }
        if (expected != end - begin)
            throw new UllmeException($"Malformed safetensors header: {where} is {dtype} with shape {SafeTensorInfo.FormatShape(shape)}, which needs {expected} bytes, but its data_offsets [{begin}, {end}] span {end - begin} bytes.");

        return new SafeTensorInfo(name, dtype, shape, begin, end);
    }

    private static void CheckOverlaps(string path, IEnumerable<SafeTensorInfo> tensors)
    {
        SafeTensorInfo? previous = null;
        foreach (var t in tensors.Where(t => t.End > t.Begin).OrderBy(t => t.Begin))
        {
            if (previous is not null && t.Begin < previous.End)
                throw new UllmeException($"Malformed safetensors header in '{path}': tensors '{previous.Name}' [{previous.Begin}, {previous.End}) and '{t.Name}' [{t.Begin}, {t.End}) overlap.");
            previous = t;
        }
    }

    private static void ReadExactly(SafeFileHandle handle, Span<byte> buffer, long offset, string path)
    {
        while (!buffer.IsEmpty)
        {
            int n = RandomAccess.Read(handle, buffer, offset);
            if (n <= 0) throw new UllmeException($"Safetensors file '{path}' ended unexpectedly while reading its header.");
            offset += n;
            buffer = buffer[n..];
        }
    }
}
