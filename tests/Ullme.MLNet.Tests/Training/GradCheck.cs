using static TorchSharp.torch;

namespace Ullme.MLNet.Tests.Training;

/// <summary>Hand-computation helpers for loss tests: plain double arrays and central finite differences.</summary>
internal static class GradCheck
{
    /// <summary>Deterministic pseudo-random doubles in [-1, 1) (System.Random with a fixed seed).</summary>
    public static double[] Values(int seed, int count)
    {
        var rng = new Random(seed);
        var v = new double[count];
        for (int i = 0; i < count; i++) v[i] = rng.NextDouble() * 2 - 1;
        return v;
    }

    public static Tensor T(double[] data, params long[] shape) => tensor(data, dtype: ScalarType.Float64).reshape(shape);

    public static Tensor Leaf(double[] data, params long[] shape) => T(data, shape).requires_grad_(true);

    public static double[] Data(Tensor t) => t.detach().to(ScalarType.Float64).cpu().contiguous().data<double>().ToArray();

    public static double Scalar(Tensor t) => t.to(ScalarType.Float64).item<double>();

    /// <summary>∂f/∂x by central differences (h = 1e-6) for every element of the float64 tensor <paramref name="x"/>.</summary>
    public static double[] Numeric(Func<double> f, Tensor x, double h = 1e-6)
    {
        using var _ = no_grad();
        var flat = x.view(-1);
        var grad = new double[flat.shape[0]];
        for (int i = 0; i < grad.Length; i++)
        {
            double orig = flat[i].item<double>();
            flat[i].fill_(orig + h);
            double up = f();
            flat[i].fill_(orig - h);
            double down = f();
            flat[i].fill_(orig);
            grad[i] = (up - down) / (2 * h);
        }
        return grad;
    }

    public static void Close(double[] expected, double[] actual, double tol, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= tol * (1 + Math.Abs(expected[i])),
                $"{what}[{i}]: expected {expected[i]:R}, got {actual[i]:R}");
    }

    public static void Close(double expected, double actual, double tol, string what) => Close([expected], [actual], tol, what);

    public static double Dot(double[] a, int ai, double[] b, int bi, int n)
    {
        double s = 0;
        for (int k = 0; k < n; k++) s += a[ai + k] * b[bi + k];
        return s;
    }

    public static double Cos(double[] a, int ai, double[] b, int bi, int n) =>
        Dot(a, ai, b, bi, n) / Math.Sqrt(Dot(a, ai, a, ai, n) * Dot(b, bi, b, bi, n));

    public static double LogSumExp(IEnumerable<double> xs)
    {
        var arr = xs.ToArray();
        double m = arr.Max();
        return m + Math.Log(arr.Sum(x => Math.Exp(x - m)));
    }

    public static double Sigmoid(double x) => 1 / (1 + Math.Exp(-x));
}
