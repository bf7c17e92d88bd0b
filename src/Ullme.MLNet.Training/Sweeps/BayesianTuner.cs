using System.Globalization;

namespace Ullme.MLNet.Training.Sweeps;

/// <summary>
/// The model-based search of <see cref="SweepSearch.Bayesian"/>, in the spirit of ML.NET AutoML's SMAC tuner (a
/// surrogate of the metric over the settings, and the next trial where expected improvement is largest), with a
/// Gaussian process as the surrogate instead of SMAC's random forest: it needs no extra package and is exact on the
/// few dozen trials a fine-tuning sweep affords.
/// <list type="bullet">
/// <item>Each setting is a coordinate: a numeric dimension (all values numbers) is its value's rank among the
/// dimension's sorted values, scaled to [0, 1] (so 1e-4, 3e-4, 1e-3 are evenly spaced, as on a log axis); a
/// categorical one is one-hot, scaled so that two different categories lie 1 apart.</item>
/// <item>The first <see cref="InitialTrials"/> points are drawn at random (seeded). After that, a GP with a squared
/// exponential kernel (length scale picked from a small set by marginal likelihood, noise variance 1e-2 of the
/// standardised metric) is fitted to every scored trial, and the untried grid point with the largest expected
/// improvement over the best score so far is next.</item>
/// <item>Failed trials are tried (never proposed again) but not modelled; trials stopped early are modelled with
/// their last evaluation.</item>
/// </list>
/// </summary>
internal sealed class BayesianTuner
{
    private static readonly double[] LengthScales = [0.15, 0.25, 0.4, 0.6, 1.0];
    private const double Noise = 1e-2;
    private const double Exploration = 0.01;

    private readonly SweepSpace _space;
    private readonly bool _higherIsBetter;
    private readonly Random _random;
    private readonly double[][] _coordinates;

    public BayesianTuner(SweepSpace space, bool higherIsBetter, int seed, int? initialTrials = null)
    {
        _space = space;
        _higherIsBetter = higherIsBetter;
        _random = new Random(seed);
        InitialTrials = initialTrials ?? Math.Max(3, space.Dimensions.Count + 1);
        int size = checked((int)space.GridSize);
        var columns = space.Dimensions.Select(Encoder).ToList();
        _coordinates = new double[size][];
        for (int flat = 0; flat < size; flat++)
        {
            var point = space.PointAt(flat);
            _coordinates[flat] = columns.SelectMany((encode, d) => encode(point.Indices[d])).ToArray();
        }
    }

    /// <summary>Random points before the surrogate takes over.</summary>
    public int InitialTrials { get; }

    /// <summary>The next point to try, or null when every point was tried.</summary>
    /// <param name="tried">Grid positions already run (failed ones included).</param>
    /// <param name="scored">Grid position and metric of every trial with a finite score.</param>
    public SweepPoint? Next(IReadOnlySet<int> tried, IReadOnlyList<(int Flat, double Metric)> scored)
    {
        var open = Enumerable.Range(0, _coordinates.Length).Where(i => !tried.Contains(i)).ToList();
        if (open.Count == 0) return null;
        if (tried.Count < InitialTrials || scored.Count < 2)
            return _space.PointAt(open[_random.Next(open.Count)]);

        // Standardise, as a maximisation.
        var y = scored.Select(s => _higherIsBetter ? s.Metric : -s.Metric).ToArray();
        double mean = y.Average();
        double sd = Math.Sqrt(y.Select(v => (v - mean) * (v - mean)).Average());
        if (!(sd > 1e-12)) sd = 1;
        var z = y.Select(v => (v - mean) / sd).ToArray();
        var x = scored.Select(s => _coordinates[s.Flat]).ToArray();

        double scale = LengthScales.MaxBy(l => LogMarginalLikelihood(x, z, l));
        var (chol, alpha) = Fit(x, z, scale);
        double best = z.Max();
        int choice = open[0];
        double bestGain = double.NegativeInfinity;
        foreach (int i in open)
        {
            var (mu, variance) = Predict(x, chol, alpha, _coordinates[i], scale);
            double gain = ExpectedImprovement(mu, Math.Sqrt(Math.Max(variance, 1e-12)), best + Exploration);
            if (gain > bestGain) { bestGain = gain; choice = i; }
        }
        return _space.PointAt(choice);
    }

    /// <summary>How a dimension's value index becomes coordinates.</summary>
    private static Func<int, double[]> Encoder(SweepDimension dimension)
    {
        var values = dimension.Values;
        var numbers = values.Select(AsNumber).ToList();
        if (values.Count > 1 && numbers.All(n => n is not null))
        {
            var order = numbers.Select((n, i) => (n!.Value, i)).OrderBy(p => p.Value).Select(p => p.i).ToList();
            var rank = new double[values.Count];
            for (int r = 0; r < order.Count; r++) rank[order[r]] = (double)r / (values.Count - 1);
            return i => [rank[i]];
        }
        double side = Math.Sqrt(0.5);
        return i => Enumerable.Range(0, values.Count).Select(k => k == i ? side : 0.0).ToArray();
    }

    private static double? AsNumber(object value) => value switch
    {
        double d => d,
        float f => f,
        int i => i,
        long l => l,
        decimal m => (double)m,
        _ => double.TryParse(Convert.ToString(value, CultureInfo.InvariantCulture), NumberStyles.Float, CultureInfo.InvariantCulture, out double v) && double.IsFinite(v) && value is not Enum ? v : null,
    };

    private static double Kernel(double[] a, double[] b, double scale)
    {
        double d2 = 0;
        for (int k = 0; k < a.Length; k++) d2 += (a[k] - b[k]) * (a[k] - b[k]);
        return Math.Exp(-d2 / (2 * scale * scale));
    }

    private static (double[,] Chol, double[] Alpha) Fit(double[][] x, double[] z, double scale)
    {
        int n = x.Length;
        var k = new double[n, n];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++)
                k[i, j] = Kernel(x[i], x[j], scale) + (i == j ? Noise : 0);
        var chol = Cholesky(k);
        return (chol, Solve(chol, z));
    }

    private static (double Mean, double Variance) Predict(double[][] x, double[,] chol, double[] alpha, double[] at, double scale)
    {
        int n = x.Length;
        var ks = new double[n];
        for (int i = 0; i < n; i++) ks[i] = Kernel(x[i], at, scale);
        double mean = 0;
        for (int i = 0; i < n; i++) mean += ks[i] * alpha[i];
        var v = ForwardSubstitute(chol, ks);
        double variance = 1 + Noise - v.Sum(e => e * e);
        return (mean, variance);
    }

    private static double LogMarginalLikelihood(double[][] x, double[] z, double scale)
    {
        var (chol, alpha) = Fit(x, z, scale);
        double fit = 0, logDet = 0;
        for (int i = 0; i < z.Length; i++)
        {
            fit += z[i] * alpha[i];
            logDet += Math.Log(chol[i, i]);
        }
        return -0.5 * fit - logDet;
    }

    private static double ExpectedImprovement(double mean, double sd, double target)
    {
        double u = (mean - target) / sd;
        return sd * (u * NormalCdf(u) + Math.Exp(-0.5 * u * u) / Math.Sqrt(2 * Math.PI));
    }

    /// <summary>Φ(u) via the complementary error function (Abramowitz–Stegun 7.1.26, |error| &lt; 1.5e-7).</summary>
    private static double NormalCdf(double u)
    {
        double x = Math.Abs(u) / Math.Sqrt(2);
        double t = 1 / (1 + 0.3275911 * x);
        double erfc = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))) * Math.Exp(-x * x);
        return u >= 0 ? 1 - 0.5 * erfc : 0.5 * erfc;
    }

    private static double[,] Cholesky(double[,] a)
    {
        int n = a.GetLength(0);
        var l = new double[n, n];
        for (int i = 0; i < n; i++)
            for (int j = 0; j <= i; j++)
            {
                double sum = a[i, j];
                for (int k = 0; k < j; k++) sum -= l[i, k] * l[j, k];
                l[i, j] = i == j ? Math.Sqrt(Math.Max(sum, 1e-12)) : sum / l[j, j];
            }
        return l;
    }

    private static double[] ForwardSubstitute(double[,] l, double[] b)
    {
        int n = b.Length;
        var y = new double[n];
        for (int i = 0; i < n; i++)
        {
            double sum = b[i];
            for (int k = 0; k < i; k++) sum -= l[i, k] * y[k];
            y[i] = sum / l[i, i];
        }
        return y;
    }

    /// <summary>Solves (L Lᵀ) x = b.</summary>
    private static double[] Solve(double[,] l, double[] b)
    {
        var y = ForwardSubstitute(l, b);
        int n = y.Length;
        var x = new double[n];
        for (int i = n - 1; i >= 0; i--)
        {
            double sum = y[i];
            for (int k = i + 1; k < n; k++) sum -= l[k, i] * x[k];
            x[i] = sum / l[i, i];
        }
        return x;
    }
}
