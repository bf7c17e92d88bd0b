using System.Diagnostics;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Modeling;
using static TorchSharp.torch;

namespace Ullme.MLNet.Benchmarks;

/// <summary>
/// `probe-bert-ops [T] [B]`: where the time of one all-MiniLM forward at [B, T] goes. Times the whole backbone, then
/// the same GEMMs alone (the six linears of each of the six layers), SDPA alone and the elementwise ops alone, and
/// prints each with its GFLOP/s. Diagnoses short-text throughput (small GEMMs) against the GEMM peak.
/// </summary>
public static class BertOpsProbe
{
    public static int Run(string[] args)
    {
        long t = args.Length > 0 ? long.Parse(args[0], System.Globalization.CultureInfo.InvariantCulture) : 12;
        long b = args.Length > 1 ? long.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 32;
        using var model = UllmeModel.Load(UllmeModel.DefaultModelName);
        using var noGrad = no_grad();
        const int H = 384, I = 1536, Heads = 12, Layers = 6;
        long m = b * t;
        var ids = randint(1000, 20000, [b, t], dtype: ScalarType.Int64);
        var mask = ones(b, t, dtype: ScalarType.Int64);
        mask[0, t - 1] = 0; // one padded key, so the additive-mask path runs as in real batches
        var x = randn(b, t, H);
        var x2 = randn(m, H);
        var wq = randn(H, H); var wi = randn(I, H); var wo = randn(H, I); var bias = randn(H); var biasI = randn(I);
        var q = randn(b, Heads, t, H / Heads); var kb = zeros(b, 1, 1, t);
        var inner = randn(b, t, I);
        var ln = nn.LayerNorm(H);
        Console.WriteLine($"[B={b}, T={t}] M={m}, threads {UllmeRuntime.IntraOpThreads}, OMP_WAIT_POLICY {UllmeRuntime.OmpWaitPolicy}, load {Infrastructure.Machine.LoadAverage()}");
        double gemmFlops = 2.0 * m * (4.0 * H * H + 2.0 * H * I) * Layers;
        double Time(string name, Action op, double flops = 0)
        {
            op();
            var times = new List<double>();
            var total = Stopwatch.StartNew();
            while (total.Elapsed.TotalSeconds < 1.5 || times.Count < 5)
            {
                var sw = Stopwatch.StartNew();
                op();
                times.Add(sw.Elapsed.TotalMilliseconds);
            }
            times.Sort();
            double ms = times[times.Count / 2];
            Console.WriteLine($"  {name,-48} {ms,8:F2} ms{(flops > 0 ? $"  {flops / ms / 1e6,6:F1} GFLOP/s" : "")}");
            return ms;
        }
        Time("backbone forward", () => { using var s = NewDisposeScope(); model.Backbone.Forward(ids, mask, AttentionMode.Bidirectional); }, gemmFlops);
        if (model.Backbone is BertEncoder bert)
        {
            // The model's own modules (private fields, reached by reflection: this is a probe).
            object Field(object o, string name) => o.GetType().GetField(name, System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance)!.GetValue(o)!;
            var stack = (BertLayerStack)Field(bert, "encoder");
            Tensor? kbias = zeros(b, 1, 1, t);
            Time("6 x BertLayer.Forward (the model's layers)", () => { using var s = NewDisposeScope(); foreach (var layer in stack.layer) layer.Forward(x, kbias); }, gemmFlops);
            var att = stack.layer.Select(l => (BertAttention)Field(l, "attention")).ToArray();
            var mid = stack.layer.Select(l => (BertIntermediate)Field(l, "intermediate")).ToArray();
            var outp = stack.layer.Select(l => (BertOutput)Field(l, "output")).ToArray();
            Time("6 x BertAttention.Forward", () => { using var s = NewDisposeScope(); foreach (var a in att) a.Forward(x, kbias); });
            Time("6 x BertIntermediate.Forward", () => { using var s = NewDisposeScope(); foreach (var a in mid) a.Forward(x); });
            Time("6 x BertOutput.Forward", () => { using var s = NewDisposeScope(); foreach (var a in outp) a.Forward(inner, x); });
        }
        Time("36 linears (3D input, as the model)", () =>
        {
            using var s = NewDisposeScope();
            for (int l = 0; l < Layers; l++)
            {
                for (int k = 0; k < 4; k++) nn.functional.linear(x, wq, bias);
                nn.functional.linear(x, wi, biasI);
                nn.functional.linear(inner, wo, bias);
            }
        }, gemmFlops);
        var perLayer = Enumerable.Range(0, Layers).Select(_ => (Q: Enumerable.Range(0, 4).Select(_ => randn(H, H)).ToArray(), I: randn(I, H), O: randn(H, I))).ToArray();
        Time("36 linears (3D input, distinct weights per layer)", () =>
        {
            using var s = NewDisposeScope();
            for (int l = 0; l < Layers; l++)
            {
                for (int k = 0; k < 4; k++) nn.functional.linear(x, perLayer[l].Q[k], bias);
                nn.functional.linear(x, perLayer[l].I, biasI);
                nn.functional.linear(inner, perLayer[l].O, bias);
            }
        }, gemmFlops);
        Time("36 linears (2D input)", () =>
        {
            using var s = NewDisposeScope();
            var i2 = inner.view(m, I);
            for (int l = 0; l < Layers; l++)
            {
                for (int k = 0; k < 4; k++) nn.functional.linear(x2, wq, bias);
                nn.functional.linear(x2, wi, biasI);
                nn.functional.linear(i2, wo, bias);
            }
        }, gemmFlops);
        Time("6 x SDPA with [B,1,1,T] mask", () => { using var s = NewDisposeScope(); for (int l = 0; l < Layers; l++) nn.functional.scaled_dot_product_attention(q, q, q, kb); });
        var qkvStrided = randn(b, t, H).view(b, t, Heads, H / Heads).transpose(1, 2);     // as the model feeds SDPA
        Time("6 x SDPA, strided q/k/v (as the model), mask", () => { using var s = NewDisposeScope(); for (int l = 0; l < Layers; l++) nn.functional.scaled_dot_product_attention(qkvStrided, qkvStrided, qkvStrided, kb); });
        var dropout = nn.Dropout(0.1); dropout.eval();
        Time("18 x dropout (eval)", () => { using var s = NewDisposeScope(); for (int l = 0; l < 18; l++) dropout.forward(x); });
        Time("embeddings + checks (backbone with 0 layers)", () =>
        {
            using var s = NewDisposeScope();
            ids.min().item<long>(); ids.max().item<long>();
            var keep = mask.to(ScalarType.Bool);
            keep.all().item<bool>();
        });
        Time("6 x SDPA without mask", () => { using var s = NewDisposeScope(); for (int l = 0; l < Layers; l++) nn.functional.scaled_dot_product_attention(q, q, q); });
        Time("6 x (gelu + 2 add + 2 layer_norm)", () =>
        {
            using var s = NewDisposeScope();
            for (int l = 0; l < Layers; l++) { nn.functional.gelu(inner); ln.forward(x.add(x)); ln.forward(x.add(x)); }
        });
        Time("6 x (3 view/transpose + transpose/reshape)", () =>
        {
            using var s = NewDisposeScope();
            for (int l = 0; l < Layers; l++)
            {
                for (int k = 0; k < 3; k++) x.view(b, t, Heads, H / Heads).transpose(1, 2);
                q.transpose(1, 2).reshape(b, t, H);
            }
        });
        return 0;
    }
}
