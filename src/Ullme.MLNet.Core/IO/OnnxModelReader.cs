using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using static TorchSharp.torch;

namespace Ullme.MLNet.IO;

/// <summary>ONNX <c>TensorProto.DataType</c> codes.</summary>
internal enum OnnxDataType
{
    Undefined = 0, Float = 1, UInt8 = 2, Int8 = 3, UInt16 = 4, Int16 = 5, Int32 = 6, Int64 = 7, String = 8,
    Bool = 9, Float16 = 10, Double = 11, UInt32 = 12, UInt64 = 13, Complex64 = 14, Complex128 = 15, BFloat16 = 16,
}

/// <summary>An initializer (or a constant's value): name, shape, element type and little-endian payload.</summary>
internal sealed class OnnxTensor
{
    internal OnnxTensor(string name, long[] dims, OnnxDataType dataType, ReadOnlyMemory<byte> data)
    {
        Name = name;
        Dims = dims;
        DataType = dataType;
        Data = data;
    }

    public string Name { get; }

    /// <summary>Shape; empty for a scalar.</summary>
    public IReadOnlyList<long> Dims { get; }

    public OnnxDataType DataType { get; }

    /// <summary>The elements, packed little-endian (from <c>raw_data</c>, or re-packed from the typed fields).</summary>
    public ReadOnlyMemory<byte> Data { get; }

    public long ElementCount => Dims.Aggregate(1L, (a, b) => a * b);

    public bool IsFloatingPoint => DataType is OnnxDataType.Float or OnnxDataType.Float16 or OnnxDataType.BFloat16 or OnnxDataType.Double;

    /// <summary>A new torch tensor with this shape and the matching dtype (the data are copied once).</summary>
    public Tensor ToTorch()
    {
        var dtype = DataType switch
        {
            OnnxDataType.Float => ScalarType.Float32,
            OnnxDataType.Float16 => ScalarType.Float16,
            OnnxDataType.BFloat16 => ScalarType.BFloat16,
            OnnxDataType.Double => ScalarType.Float64,
            OnnxDataType.Int64 => ScalarType.Int64,
            OnnxDataType.Int32 => ScalarType.Int32,
            OnnxDataType.Int16 => ScalarType.Int16,
            OnnxDataType.Int8 => ScalarType.Int8,
            OnnxDataType.UInt8 => ScalarType.Byte,
            OnnxDataType.Bool => ScalarType.Bool,
            _ => throw new UllmeException($"ONNX tensor '{Name}' has data type {DataType}, which cannot become a torch tensor."),
        };
        var tensor = empty(Dims.ToArray(), dtype);
        if (Data.Length > 0) tensor.bytes = MemoryMarshal.AsMemory(Data).Span;
        return tensor;
    }

    /// <summary>The elements of an integer tensor (e.g. a Reshape target shape).</summary>
    public long[] ToInt64Array() => DataType switch
    {
        OnnxDataType.Int64 => MemoryMarshal.Cast<byte, long>(Data.Span).ToArray(),
        OnnxDataType.Int32 => MemoryMarshal.Cast<byte, int>(Data.Span).ToArray().Select(x => (long)x).ToArray(),
        _ => throw new UllmeException($"ONNX tensor '{Name}' is {DataType}, not an integer tensor."),
    };
}

/// <summary>One node's attribute; only the scalar, list and tensor kinds are decoded.</summary>
internal sealed record OnnxAttribute(string Name, long? Int, float? Float, string? String, IReadOnlyList<long> Ints, OnnxTensor? Tensor);

/// <summary>A graph node: operator and the names of the values it reads and writes.</summary>
internal sealed record OnnxNode(string Name, string OpType, IReadOnlyList<string> Inputs, IReadOnlyList<string> Outputs,
    IReadOnlyList<OnnxAttribute> Attributes)
{
    public OnnxAttribute? Attribute(string name) => Attributes.FirstOrDefault(a => a.Name == name);
}

/// <summary>The main graph: nodes in topological order, initializers by name, graph inputs and outputs.</summary>
internal sealed class OnnxGraph
{
    internal OnnxGraph(IReadOnlyList<OnnxNode> nodes, IReadOnlyList<OnnxTensor> initializers, IReadOnlyList<string> inputs, IReadOnlyList<string> outputs)
    {
        Nodes = nodes;
        Initializers = initializers;
        InitializersByName = initializers.GroupBy(t => t.Name).ToDictionary(g => g.Key, g => g.First());
        Inputs = inputs;
        Outputs = outputs;
    }

    public IReadOnlyList<OnnxNode> Nodes { get; }
    public IReadOnlyList<OnnxTensor> Initializers { get; }
    public IReadOnlyDictionary<string, OnnxTensor> InitializersByName { get; }
    public IReadOnlyList<string> Inputs { get; }
    public IReadOnlyList<string> Outputs { get; }
}

/// <summary>An ONNX <c>ModelProto</c>, reduced to what weight import needs.</summary>
internal sealed class OnnxModel
{
    internal OnnxModel(long irVersion, string producerName, string producerVersion, OnnxGraph graph)
    {
        IrVersion = irVersion;
        ProducerName = producerName;
        ProducerVersion = producerVersion;
        Graph = graph;
    }

    public long IrVersion { get; }
    public string ProducerName { get; }
    public string ProducerVersion { get; }
    public OnnxGraph Graph { get; }
}

/// <summary>
/// A minimal reader of ONNX model files, straight from the protobuf wire format (no protobuf package): enough to
/// pull the weights (initializers) out of an exported model and to trace which operator uses which weight.
/// <para>
/// Wire format in brief: a message is a sequence of (key, value) pairs; key = field_number &lt;&lt; 3 | wire_type,
/// wire types 0 = varint, 1 = 8 bytes, 2 = length-delimited (strings, bytes, sub-messages, packed repeated
/// numbers), 5 = 4 bytes. Unknown fields are skipped, so newer ONNX versions still read.
/// </para>
/// Tensor payloads are not copied while parsing: each <see cref="OnnxTensor.Data"/> is a slice of the file's bytes.
/// </summary>
internal static class OnnxModelReader
{
    /// <summary>Reads an .onnx file.</summary>
    public static OnnxModel Read(string path)
    {
        if (!File.Exists(path)) throw new UllmeException($"ONNX model file '{path}' does not exist.");
        return Read(File.ReadAllBytes(path), path);
    }

    /// <summary>Reads a whole ONNX model from a stream (e.g. an embedded resource).</summary>
    public static OnnxModel Read(Stream stream, string sourceName = "ONNX stream")
    {
        byte[] bytes;
        if (stream is MemoryStream ms && ms.TryGetBuffer(out var segment) && segment.Offset == 0 && segment.Count == segment.Array!.Length)
            bytes = segment.Array;
        else
        {
            using var copy = stream.CanSeek ? new MemoryStream(checked((int)(stream.Length - stream.Position))) : new MemoryStream();
            stream.CopyTo(copy);
            bytes = copy.Length == copy.Capacity ? copy.GetBuffer() : copy.ToArray();
        }
        return Read(bytes, sourceName);
    }

    /// <summary>Parses ONNX bytes; <paramref name="sourceName"/> names the source in error messages.</summary>
    public static OnnxModel Read(byte[] bytes, string sourceName = "ONNX model")
    {
        if (!BitConverter.IsLittleEndian)
            throw new UllmeException("Reading ONNX weights needs a little-endian machine.");
        try
        {
            return ParseModel(bytes, sourceName);
        }
        catch (Exception e) when (e is IndexOutOfRangeException or ArgumentOutOfRangeException or OverflowException or DecoderFallbackException)
        {
            throw new UllmeException($"'{sourceName}' is not a valid ONNX model (truncated or corrupt protobuf).", e);
        }
    }

    private static OnnxModel ParseModel(byte[] bytes, string source)
    {
        long irVersion = 0;
        string producer = "", producerVersion = "";
        OnnxGraph? graph = null;
        var reader = new ProtoReader(bytes, 0, bytes.Length);
        while (reader.Next(out int field, out int wire))
        {
            switch (field)
            {
                case 1 when wire == 0: irVersion = (long)reader.Varint(); break;
                case 2 when wire == 2: producer = reader.String(); break;
                case 3 when wire == 2: producerVersion = reader.String(); break;
                case 7 when wire == 2: graph = ParseGraph(reader.Sub(), source); break;
                default: reader.Skip(wire); break;
            }
        }
        if (graph is null || irVersion == 0)
            throw new UllmeException($"'{source}' is not an ONNX model (no ir_version or graph).");
        return new OnnxModel(irVersion, producer, producerVersion, graph);
    }

    private static OnnxGraph ParseGraph(ProtoReader reader, string source)
    {
        var nodes = new List<OnnxNode>();
        var initializers = new List<OnnxTensor>();
        var inputs = new List<string>();
        var outputs = new List<string>();
        while (reader.Next(out int field, out int wire))
        {
            switch (field)
            {
                case 1 when wire == 2: nodes.Add(ParseNode(reader.Sub(), source)); break;
                case 5 when wire == 2: initializers.Add(ParseTensor(reader.Sub(), source)); break;
                case 11 when wire == 2: inputs.Add(ParseValueInfoName(reader.Sub())); break;
                case 12 when wire == 2: outputs.Add(ParseValueInfoName(reader.Sub())); break;
                default: reader.Skip(wire); break;
            }
        }
        return new OnnxGraph(nodes, initializers, inputs, outputs);
    }

    private static string ParseValueInfoName(ProtoReader reader)
    {
        string name = "";
        while (reader.Next(out int field, out int wire))
        {
            if (field == 1 && wire == 2) name = reader.String();
            else reader.Skip(wire);
        }
        return name;
    }

    private static OnnxNode ParseNode(ProtoReader reader, string source)
    {
        var inputs = new List<string>();
        var outputs = new List<string>();
        var attributes = new List<OnnxAttribute>();
        string name = "", opType = "";
        while (reader.Next(out int field, out int wire))
        {
            switch (field)
            {
                case 1 when wire == 2: inputs.Add(reader.String()); break;
                case 2 when wire == 2: outputs.Add(reader.String()); break;
                case 3 when wire == 2: name = reader.String(); break;
                case 4 when wire == 2: opType = reader.String(); break;
                case 5 when wire == 2: attributes.Add(ParseAttribute(reader.Sub(), source)); break;
                default: reader.Skip(wire); break;
            }
        }
        return new OnnxNode(name, opType, inputs, outputs, attributes);
    }

    private static OnnxAttribute ParseAttribute(ProtoReader reader, string source)
    {
        string name = "";
        long? i = null;
        float? f = null;
        string? s = null;
        var ints = new List<long>();
        OnnxTensor? t = null;
        while (reader.Next(out int field, out int wire))
        {
            switch (field)
            {
                case 1 when wire == 2: name = reader.String(); break;
                case 2 when wire == 5: f = BitConverter.Int32BitsToSingle((int)reader.Fixed32()); break;
                case 3 when wire == 0: i = (long)reader.Varint(); break;
                case 4 when wire == 2: s = reader.String(); break;
                case 5 when wire == 2: t = ParseTensor(reader.Sub(), source); break;
                case 8 when wire == 0: ints.Add((long)reader.Varint()); break;
                case 8 when wire == 2: reader.Sub().PackedVarints(ints); break;
                default: reader.Skip(wire); break;
            }
        }
        return new OnnxAttribute(name, i, f, s, ints, t);
    }

    private static OnnxTensor ParseTensor(ProtoReader reader, string source)
    {
        var dims = new List<long>();
        var dataType = OnnxDataType.Undefined;
        string name = "";
        ReadOnlyMemory<byte>? raw = null;
        List<float>? floats = null;
        List<long>? int64s = null, int32s = null;
        List<double>? doubles = null;
        bool external = false;
        while (reader.Next(out int field, out int wire))
        {
            switch (field)
            {
                case 1 when wire == 0: dims.Add((long)reader.Varint()); break;
                case 1 when wire == 2: reader.Sub().PackedVarints(dims); break;
                case 2 when wire == 0: dataType = (OnnxDataType)(int)reader.Varint(); break;
                case 4 when wire == 5: (floats ??= []).Add(BitConverter.Int32BitsToSingle((int)reader.Fixed32())); break;
                case 4 when wire == 2: reader.Sub().PackedFixed32(floats ??= []); break;
                case 5 when wire == 0: (int32s ??= []).Add((long)reader.Varint()); break;
                case 5 when wire == 2: reader.Sub().PackedVarints(int32s ??= []); break;
                case 7 when wire == 0: (int64s ??= []).Add((long)reader.Varint()); break;
                case 7 when wire == 2: reader.Sub().PackedVarints(int64s ??= []); break;
                case 8 when wire == 2: name = reader.String(); break;
                case 9 when wire == 2: raw = reader.Bytes(); break;
                case 10 when wire == 1: (doubles ??= []).Add(BitConverter.Int64BitsToDouble((long)reader.Fixed64())); break;
                case 10 when wire == 2: reader.Sub().PackedFixed64(doubles ??= []); break;
                case 13 when wire == 2: external = true; reader.Skip(wire); break;
                case 14 when wire == 0: external |= reader.Varint() == 1; break;
                default: reader.Skip(wire); break;
            }
        }
        if (external)
            throw new UllmeException($"'{source}': tensor '{name}' is stored in an external data file; only self-contained ONNX models are supported.");

        long count = dims.Aggregate(1L, (a, b) => a * b);
        int elementSize = ElementSize(dataType);
        ReadOnlyMemory<byte> data;
        if (raw is { } r) data = r;
        else if (floats is not null) data = MemoryMarshal.AsBytes(floats.ToArray().AsSpan()).ToArray();
        else if (doubles is not null) data = MemoryMarshal.AsBytes(doubles.ToArray().AsSpan()).ToArray();
        else if (int64s is not null) data = MemoryMarshal.AsBytes(int64s.ToArray().AsSpan()).ToArray();
        else if (int32s is not null) data = PackInt32Field(int32s, dataType, elementSize);
        else data = ReadOnlyMemory<byte>.Empty;

        if (elementSize > 0 && data.Length != count * elementSize)
            throw new UllmeException($"'{source}': tensor '{name}' has shape [{string.Join(", ", dims)}] of {dataType} ({count * elementSize} bytes) but carries {data.Length} bytes.");
        return new OnnxTensor(name, dims.ToArray(), dataType, data);
    }

    /// <summary>ONNX keeps int32, int16, int8, uint8, bool, float16 and bfloat16 elements in <c>int32_data</c>, one
    /// element per varint; pack them to their real width.</summary>
    private static byte[] PackInt32Field(List<long> values, OnnxDataType type, int elementSize)
    {
        var bytes = new byte[values.Count * Math.Max(elementSize, 1)];
        for (int i = 0; i < values.Count; i++)
        {
            long v = values[i];
            switch (elementSize)
            {
                case 1: bytes[i] = (byte)v; break;
                case 2: BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan(i * 2), (ushort)v); break;
                case 4: BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(i * 4), (int)v); break;
                default: throw new UllmeException($"ONNX int32_data cannot hold {type} elements.");
            }
        }
        return bytes;
    }

    private static int ElementSize(OnnxDataType type) => type switch
    {
        OnnxDataType.Float or OnnxDataType.Int32 or OnnxDataType.UInt32 => 4,
        OnnxDataType.Double or OnnxDataType.Int64 or OnnxDataType.UInt64 or OnnxDataType.Complex64 => 8,
        OnnxDataType.Float16 or OnnxDataType.BFloat16 or OnnxDataType.Int16 or OnnxDataType.UInt16 => 2,
        OnnxDataType.Int8 or OnnxDataType.UInt8 or OnnxDataType.Bool => 1,
        OnnxDataType.Complex128 => 16,
        _ => 0,
    };

    /// <summary>Cursor over one protobuf message inside a byte array.</summary>
    private struct ProtoReader(byte[] buffer, int start, int end)
    {
        private int position = start;

        public bool Next(out int field, out int wire)
        {
            if (position >= end) { field = 0; wire = 0; return false; }
            ulong key = Varint();
            field = (int)(key >> 3);
            wire = (int)(key & 7);
            return true;
        }

        public ulong Varint()
        {
            ulong result = 0;
            for (int shift = 0; shift < 64; shift += 7)
            {
                if (position >= end) throw new IndexOutOfRangeException("varint runs past the message end");
                byte b = buffer[position++];
                result |= (ulong)(b & 0x7F) << shift;
                if (b < 0x80) return result;
            }
            throw new OverflowException("varint longer than 10 bytes");
        }

        public uint Fixed32()
        {
            Ensure(4);
            uint v = BinaryPrimitives.ReadUInt32LittleEndian(buffer.AsSpan(position, 4));
            position += 4;
            return v;
        }

        public ulong Fixed64()
        {
            Ensure(8);
            ulong v = BinaryPrimitives.ReadUInt64LittleEndian(buffer.AsSpan(position, 8));
            position += 8;
            return v;
        }

        public ReadOnlyMemory<byte> Bytes()
        {
            int length = checked((int)Varint());
            Ensure(length);
            var slice = new ReadOnlyMemory<byte>(buffer, position, length);
            position += length;
            return slice;
        }

        public string String() => Encoding.UTF8.GetString(Bytes().Span);

        public ProtoReader Sub()
        {
            int length = checked((int)Varint());
            Ensure(length);
            var sub = new ProtoReader(buffer, position, position + length);
            position += length;
            return sub;
        }

        public void PackedVarints(List<long> into)
        {
            while (position < end) into.Add((long)Varint());
        }

        public void PackedFixed32(List<float> into)
        {
            while (position < end) into.Add(BitConverter.Int32BitsToSingle((int)Fixed32()));
        }

        public void PackedFixed64(List<double> into)
        {
            while (position < end) into.Add(BitConverter.Int64BitsToDouble((long)Fixed64()));
        }

        public void Skip(int wire)
        {
            switch (wire)
            {
                case 0: Varint(); break;
                case 1: Ensure(8); position += 8; break;
                case 2: { int length = checked((int)Varint()); Ensure(length); position += length; break; }
                case 5: Ensure(4); position += 4; break;
                default: throw new UllmeException($"ONNX protobuf has unsupported wire type {wire} (groups are not used by ONNX).");
            }
        }

        private readonly void Ensure(int count)
        {
            if (count < 0 || position + count > end) throw new IndexOutOfRangeException("field runs past the message end");
        }
    }
}
