using System.Text;
using Ullme.MLNet.IO;
using Ullme.MLNet.Tests.Infrastructure;
using static TorchSharp.torch;

namespace Ullme.MLNet.Tests.Modeling;

/// <summary>The ONNX reader and the BERT weight tracing on small hand-written ONNX protobufs.</summary>
[Collection(TorchCollection.Name)]
public sealed class BertOnnxImportTests
{
    /// <summary>Just enough protobuf writing to build ONNX test models.</summary>
    private sealed class Proto
    {
        private readonly MemoryStream stream = new();

        private void Raw(ulong value)
        {
            while (value >= 0x80) { stream.WriteByte((byte)(value | 0x80)); value >>= 7; }
            stream.WriteByte((byte)value);
        }

        public Proto Varint(int field, long value) { Raw((ulong)(field << 3)); Raw((ulong)value); return this; }
        public Proto Bytes(int field, byte[] data) { Raw((ulong)(field << 3 | 2)); Raw((ulong)data.Length); stream.Write(data); return this; }
        public Proto String(int field, string s) => Bytes(field, Encoding.UTF8.GetBytes(s));
        public Proto Message(int field, Proto m) => Bytes(field, m.ToArray());
        public Proto Float(int field, float f) { Raw((ulong)(field << 3 | 5)); stream.Write(BitConverter.GetBytes(f)); return this; }
        public byte[] ToArray() => stream.ToArray();
    }

    /// <summary>TensorProto with float32 payload in raw_data (packed = false: in float_data, one field per value).</summary>
    private static Proto FloatTensor(string name, long[] dims, float[] values, bool inRawData = true)
    {
        var t = new Proto();
        // dims as one packed field of varints
        var dimBytes = new MemoryStream();
        foreach (long d in dims) { ulong v = (ulong)d; while (v >= 0x80) { dimBytes.WriteByte((byte)(v | 0x80)); v >>= 7; } dimBytes.WriteByte((byte)v); }
        t.Bytes(1, dimBytes.ToArray()).Varint(2, 1).String(8, name);
        if (inRawData) t.Bytes(9, values.SelectMany(BitConverter.GetBytes).ToArray());
        else foreach (float v in values) t.Float(4, v);
        return t;
    }

    private static Proto Node(string op, string name, string[] inputs, string[] outputs, long? transB = null)
    {
        var n = new Proto();
        foreach (var i in inputs) n.String(1, i);
        foreach (var o in outputs) n.String(2, o);
        n.String(3, name).String(4, op);
        if (transB is { } tb) n.Message(5, new Proto().String(1, "transB").Varint(3, tb).Varint(20, 2));
        return n;
    }

    private static byte[] Model(Proto[] nodes, Proto[] initializers)
    {
        var graph = new Proto();
        foreach (var n in nodes) graph.Message(1, n);
        graph.String(2, "test");
        foreach (var t in initializers) graph.Message(5, t);
        graph.Message(11, new Proto().String(1, "x"));
        graph.Message(12, new Proto().String(1, "y"));
        return new Proto().Varint(1, 7).String(2, "unit-test").Message(7, graph).ToArray();
    }

    private static float[] Floats(Tensor t) => t.contiguous().data<float>().ToArray();

    [Fact]
    public void AnonymousMatMulWeightIsNamedAfterItsBiasAndTransposed()
    {
        // y = x · W + b with W stored [in = 3, out = 2], as torch.onnx.export writes a Linear(3 → 2).
        float[] w = [1, 2, 3, 4, 5, 6];                  // rows: in; cols: out
        byte[] bytes = Model(
            [Node("MatMul", "MatMul_1", ["x", "onnx::MatMul_7"], ["m"]), Node("Add", "Add_2", ["bert.encoder.layer.0.output.dense.bias", "m"], ["y"])],
            [FloatTensor("onnx::MatMul_7", [3, 2], w, inRawData: false),
             FloatTensor("bert.encoder.layer.0.output.dense.bias", [2], [0.5f, -0.5f]),
             FloatTensor("bert.embeddings.word_embeddings.weight", [2, 3], [1, 1, 1, 2, 2, 2])]);

        var model = OnnxModelReader.Read(bytes);
        Assert.Equal(7, model.IrVersion);
        Assert.Equal("unit-test", model.ProducerName);
        Assert.Equal(["x"], model.Graph.Inputs);
        Assert.Equal(2, model.Graph.Nodes.Count);

        var weights = OnnxBertImporter.ReadStateDict(model);
        try
        {
            Assert.Equal(["embeddings.word_embeddings.weight", "encoder.layer.0.output.dense.bias", "encoder.layer.0.output.dense.weight"],
                weights.Keys.Order(StringComparer.Ordinal));
            var weight = weights["encoder.layer.0.output.dense.weight"];
            Assert.Equal(new long[] { 2, 3 }, weight.shape);               // PyTorch's [out, in]
            Assert.Equal([1, 3, 5, 2, 4, 6], Floats(weight));
            Assert.Equal([0.5f, -0.5f], Floats(weights["encoder.layer.0.output.dense.bias"]));
        }
        finally
        {
            foreach (var t in weights.Values) t.Dispose();
        }
    }

    [Theory]
    [InlineData(1L)]
    [InlineData(0L)]
    public void GemmWeightHonoursTransB(long transB)
    {
        float[] stored = [1, 2, 3, 4, 5, 6];
        long[] dims = transB == 1 ? [2, 3] : [3, 2];
        byte[] bytes = Model(
            [Node("Gemm", "Gemm_1", ["x", "617", "pooler.dense.bias"], ["y"], transB)],
            [FloatTensor("617", dims, stored), FloatTensor("pooler.dense.bias", [2], [0, 0])]);
        var weights = OnnxBertImporter.ReadStateDict(OnnxModelReader.Read(bytes));
        try
        {
            var weight = weights["pooler.dense.weight"];
            Assert.Equal(new long[] { 2, 3 }, weight.shape);
            Assert.Equal(transB == 1 ? stored : [1, 3, 5, 2, 4, 6], Floats(weight));
        }
        finally
        {
            foreach (var t in weights.Values) t.Dispose();
        }
    }

    [Fact]
    public void UntraceableMatMulWeightIsReportedByName()
    {
        byte[] bytes = Model(
            [Node("MatMul", "MatMul_9", ["x", "onnx::MatMul_42"], ["y"])],
            [FloatTensor("onnx::MatMul_42", [2, 2], [1, 2, 3, 4])]);
        var e = Assert.Throws<UllmeException>(() => OnnxBertImporter.ReadStateDict(OnnxModelReader.Read(bytes), "tiny.onnx"));
        Assert.Contains("onnx::MatMul_42", e.Message);
        Assert.Contains("tiny.onnx", e.Message);
    }

    [Fact]
    public void CorruptOrUnsupportedFilesFailClearly()
    {
        byte[] good = Model([], [FloatTensor("a.weight", [2], [1, 2])]);
        var truncated = Assert.Throws<UllmeException>(() => OnnxModelReader.Read(good[..^3], "cut.onnx"));
        Assert.Contains("cut.onnx", truncated.Message);

        Assert.Throws<UllmeException>(() => OnnxModelReader.Read("hello, not onnx"u8.ToArray(), "text.onnx"));

        var external = new Proto().Bytes(1, [2]).Varint(2, 1).String(8, "big.weight").Varint(14, 1);
        var e = Assert.Throws<UllmeException>(() => OnnxModelReader.Read(Model([], [external]), "ext.onnx"));
        Assert.Contains("big.weight", e.Message);
        Assert.Contains("external", e.Message);

        var wrongSize = FloatTensor("short.weight", [3], [1, 2]);
        Assert.Contains("short.weight", Assert.Throws<UllmeException>(() => OnnxModelReader.Read(Model([], [wrongSize]))).Message);
    }

    [Fact]
    public void IntegerTensorsAndAttributesRoundTrip()
    {
        var shape = new Proto().Bytes(1, [2]).Varint(2, 7).String(8, "shape_const")
            .Bytes(9, new long[] { 12, -1 }.SelectMany(BitConverter.GetBytes).ToArray());
        byte[] bytes = Model([Node("Gemm", "g", ["x", "w", "b"], ["y"], transB: 1)], [shape]);
        var model = OnnxModelReader.Read(bytes);
        var tensor = model.Graph.InitializersByName["shape_const"];
        Assert.Equal(OnnxDataType.Int64, tensor.DataType);
        Assert.Equal([12L, -1L], tensor.ToInt64Array());
        Assert.Equal(1L, model.Graph.Nodes[0].Attribute("transB")?.Int);
        // Int64 initializers are not weights: the importer leaves them out.
        Assert.Empty(OnnxBertImporter.ReadStateDict(model));
    }
}
