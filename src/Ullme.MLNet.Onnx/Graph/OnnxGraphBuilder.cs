using Google.Protobuf;
using Ullme.MLNet.Onnx.Proto;

namespace Ullme.MLNet.Onnx.Graph;

/// <summary>ONNX element types (<c>TensorProto.DataType</c>).</summary>
internal enum OnnxType
{
    Float = 1, UInt8 = 2, Int8 = 3, Int32 = 6, Int64 = 7, Bool = 9,
}

/// <summary>
/// Builds one ONNX graph: nodes in topological order (each call appends after the nodes whose outputs it reads),
/// initializers, inputs and outputs, and writes it as <c>model.onnx</c> through the protobuf schema in
/// <c>Proto/onnx_model.proto</c>. Value names are unique (a prefix plus a counter). Initializer payloads go inline,
/// or, when <see cref="ExternalDataPath"/> is set, into that file as they are added (so a model larger than
/// protobuf's 2 GB limit is written without ever holding it in memory twice), 4096-byte aligned like the ONNX
/// reference writer so a reader can map them.
/// </summary>
internal sealed class OnnxGraphBuilder : IDisposable
{
    /// <summary>Tensors smaller than this stay inline even in external-data mode (as onnx's size_threshold=1024).</summary>
    private const int ExternalMinimumBytes = 1024;

    private readonly GraphProto _graph = new() { Name = "ullme" };
    private readonly Dictionary<string, int> _counters = new(StringComparer.Ordinal);
    private readonly Dictionary<(OnnxType, string), string> _constants = new();
    private readonly HashSet<string> _usedDomains = new(StringComparer.Ordinal);
    private FileStream? _external;
    private string? _externalName;

    public OnnxGraphBuilder(int opset) => Opset = opset;

    /// <summary>The ONNX default-domain opset the graph targets (17 or later).</summary>
    public int Opset { get; }

    public int NodeCount => _graph.Node.Count;

    /// <summary>Bytes of initializer payload added so far (inline and external).</summary>
    public long WeightBytes { get; private set; }

    /// <summary>Where large initializers are written (a file beside model.onnx); null = inline.</summary>
    public string? ExternalDataPath => _external?.Name;

    /// <summary>Switches to external data: large initializers added from now on go to <paramref name="path"/>,
    /// referenced by its file name (it must sit beside the model file).</summary>
    public void UseExternalData(string path)
    {
        _external = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20);
        _externalName = Path.GetFileName(path);
    }

    /// <summary>A unique value name.</summary>
    public string Fresh(string prefix)
    {
        _counters.TryGetValue(prefix, out int n);
        _counters[prefix] = n + 1;
        return n == 0 ? prefix : $"{prefix}_{n}";
    }

    public void Input(string name, OnnxType type, params object[] dims) => _graph.Input.Add(ValueInfo(name, type, dims));

    public void Output(string name, OnnxType type, params object[] dims) => _graph.Output.Add(ValueInfo(name, type, dims));

    private static ValueInfoProto ValueInfo(string name, OnnxType type, object[] dims)
    {
        var shape = new TensorShapeProto();
        foreach (var d in dims)
            shape.Dim.Add(d switch
            {
                string s => new TensorShapeProto.Types.Dimension { DimParam = s },
                int i => new TensorShapeProto.Types.Dimension { DimValue = i },
                long l => new TensorShapeProto.Types.Dimension { DimValue = l },
                _ => throw new ArgumentException($"dimension {d} must be a string or an integer"),
            });
        return new ValueInfoProto
        {
            Name = name,
            Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)type, Shape = shape } },
        };
    }

    /// <summary>Adds an initializer from little-endian bytes; returns its name.</summary>
    public string Initializer(string name, OnnxType type, long[] dims, ReadOnlySpan<byte> data)
    {
        var tensor = new TensorProto { Name = name, DataType = (int)type };
        tensor.Dims.AddRange(dims);
        if (_external is not null && data.Length >= ExternalMinimumBytes)
        {
            long offset = (_external.Position + 4095) / 4096 * 4096;
            if (offset != _external.Position) _external.Write(new byte[offset - _external.Position]);
            _external.Write(data);
            tensor.DataLocation = TensorProto.Types.DataLocation.External;
            tensor.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = _externalName! });
            tensor.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = offset.ToString(System.Globalization.CultureInfo.InvariantCulture) });
            tensor.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = data.Length.ToString(System.Globalization.CultureInfo.InvariantCulture) });
        }
        else
        {
            tensor.RawData = ByteString.CopyFrom(data);
        }
        WeightBytes += data.Length;
        _graph.Initializer.Add(tensor);
        return name;
    }

    public string Floats(string name, long[] dims, ReadOnlySpan<float> values) =>
        Initializer(name, OnnxType.Float, dims, System.Runtime.InteropServices.MemoryMarshal.AsBytes(values));

    /// <summary>A shared float constant (scalar when one value, else 1-D).</summary>
    public string ConstFloat(params float[] values) =>
        Constant(OnnxType.Float, values.Length == 1 ? [] : [values.Length],
            System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()).ToArray(), string.Join(",", values.Select(v => v.ToString("R", System.Globalization.CultureInfo.InvariantCulture))));

    /// <summary>A shared 1-D int64 constant (shapes, axes, indices).</summary>
    public string ConstInts(params long[] values) =>
        Constant(OnnxType.Int64, [values.Length], System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()).ToArray(), string.Join(",", values));

    /// <summary>A shared int64 scalar.</summary>
    public string ConstInt(long value) =>
        Constant(OnnxType.Int64, [], BitConverter.GetBytes(value), "s" + value);

    private string Constant(OnnxType type, long[] dims, byte[] data, string key)
    {
        if (_constants.TryGetValue((type, key), out var name)) return name;
        name = Initializer(Fresh("const"), type, dims, data);
        _constants[(type, key)] = name;
        return name;
    }

    /// <summary>Appends a node; returns its output names (fresh unless <paramref name="outputs"/> names them).</summary>
    public string[] NodeN(string op, string[] inputs, int outputCount, string? domain = null, string[]? outputs = null, params (string Name, object Value)[] attributes)
    {
        var node = new NodeProto { OpType = op, Name = Fresh("n_" + op) };
        if (domain is not null)
        {
            node.Domain = domain;
            _usedDomains.Add(domain);
        }
        node.Input.AddRange(inputs);
        outputs ??= Enumerable.Range(0, outputCount).Select(_ => Fresh(op.ToLowerInvariant())).ToArray();
        node.Output.AddRange(outputs);
        foreach (var (name, value) in attributes) node.Attribute.Add(Attribute(name, value));
        _graph.Node.Add(node);
        return outputs;
    }

    /// <summary>Appends a one-output node in the default domain.</summary>
    public string Node(string op, params string[] inputs) => NodeN(op, inputs, 1)[0];

    /// <summary>Appends a one-output node with attributes.</summary>
    public string Node(string op, string[] inputs, params (string Name, object Value)[] attributes) => NodeN(op, inputs, 1, null, null, attributes)[0];

    /// <summary>Appends a one-output node of <paramref name="domain"/> (e.g. com.microsoft) with attributes.</summary>
    public string DomainNode(string domain, string op, string[] inputs, params (string Name, object Value)[] attributes) =>
        NodeN(op, inputs, 1, domain, null, attributes)[0];

    private static AttributeProto Attribute(string name, object value)
    {
        var a = new AttributeProto { Name = name };
        switch (value)
        {
            case int i: a.Type = AttributeProto.Types.AttributeType.Int; a.I = i; break;
            case long l: a.Type = AttributeProto.Types.AttributeType.Int; a.I = l; break;
            case bool b: a.Type = AttributeProto.Types.AttributeType.Int; a.I = b ? 1 : 0; break;
            case float f: a.Type = AttributeProto.Types.AttributeType.Float; a.F = f; break;
            case double d: a.Type = AttributeProto.Types.AttributeType.Float; a.F = (float)d; break;
            case string s: a.Type = AttributeProto.Types.AttributeType.String; a.S = ByteString.CopyFromUtf8(s); break;
            case long[] ls: a.Type = AttributeProto.Types.AttributeType.Ints; a.Ints.AddRange(ls); break;
            case int[] isv: a.Type = AttributeProto.Types.AttributeType.Ints; a.Ints.AddRange(isv.Select(x => (long)x)); break;
            case float[] fs: a.Type = AttributeProto.Types.AttributeType.Floats; a.Floats.AddRange(fs); break;
            default: throw new ArgumentException($"attribute '{name}' has an unsupported value type {value.GetType().Name}");
        }
        return a;
    }

    // ---- operator helpers (ONNX default domain) ----

    public string Add(string a, string b) => Node("Add", a, b);
    public string Sub(string a, string b) => Node("Sub", a, b);
    public string Mul(string a, string b) => Node("Mul", a, b);
    public string Div(string a, string b) => Node("Div", a, b);
    public string MatMul(string a, string b) => Node("MatMul", a, b);
    public string Cast(string x, OnnxType to) => Node("Cast", [x], ("to", (int)to));
    public string Reshape(string x, params long[] shape) => Node("Reshape", x, ConstInts(shape));
    public string Transpose(string x, params long[] perm) => Node("Transpose", [x], ("perm", perm));
    public string Unsqueeze(string x, params long[] axes) => Node("Unsqueeze", x, ConstInts(axes));
    public string Squeeze(string x, params long[] axes) => Node("Squeeze", x, ConstInts(axes));
    public string Softmax(string x, long axis = -1) => Node("Softmax", [x], ("axis", axis));
    public string Gather(string data, string indices, long axis = 0) => Node("Gather", [data, indices], ("axis", axis));
    public string Where(string condition, string x, string y) => Node("Where", condition, x, y);
    public string Concat(long axis, params string[] inputs) => Node("Concat", inputs, ("axis", axis));

    /// <summary>x[..., start:end] on <paramref name="axis"/>.</summary>
    public string Slice(string x, long axis, long start, long end) =>
        Node("Slice", x, ConstInts(start), ConstInts(end), ConstInts(axis));

    /// <summary>ReduceSum/Mean/Max/L2 over <paramref name="axes"/> (axes as an attribute before opset 18 for all but ReduceSum).</summary>
    public string Reduce(string op, string x, long[] axes, bool keepDims)
    {
        bool axesAsInput = op == "ReduceSum" || Opset >= 18;
        return axesAsInput
            ? Node(op, [x, ConstInts(axes)], ("keepdims", keepDims ? 1 : 0))
            : Node(op, [x], ("axes", axes), ("keepdims", keepDims ? 1 : 0));
    }

    /// <summary>Dimension <paramref name="axis"/> of x's shape as an int64 scalar.</summary>
    public string Dim(string x, long axis) => Node("Gather", [Node("Shape", x), ConstInt(axis)], ("axis", 0L));

    /// <summary>[0, 1, …, n − 1] as int64 for an int64 scalar n.</summary>
    public string Range(string n) => Node("Range", ConstInt(0), n, ConstInt(1));

    /// <summary>Writes the model (a protobuf ModelProto) to <paramref name="path"/>, or returns its bytes when null.</summary>
    public byte[]? Save(string? path, IReadOnlyDictionary<string, string> metadata, string producerVersion)
    {
        var model = new ModelProto
        {
            IrVersion = Opset >= 21 ? 10 : Opset >= 19 ? 9 : 8,
            ProducerName = "Ullme.MLNet",
            ProducerVersion = producerVersion,
            Graph = _graph,
        };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = Opset });
        foreach (var domain in _usedDomains.Order(StringComparer.Ordinal))
            model.OpsetImport.Add(new OperatorSetIdProto { Domain = domain, Version = 1 });
        foreach (var (k, v) in metadata) model.MetadataProps.Add(new StringStringEntryProto { Key = k, Value = v });
        _external?.Flush();
        if (path is null) return model.ToByteArray();
        using (var stream = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20))
        {
            model.WriteTo(stream);
            stream.Flush(true);
        }
        return null;
    }

    public void Dispose()
    {
        _external?.Flush(true);
        _external?.Dispose();
        _external = null;
    }
}
