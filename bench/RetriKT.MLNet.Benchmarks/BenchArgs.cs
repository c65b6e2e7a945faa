using System.Globalization;

namespace RetriKT.MLNet.Benchmarks;

/// <summary>A benchmark argument or setting that cannot be used; Program prints its message alone and exits 2.</summary>
public sealed class BenchUsageException(string message) : Exception(message);

/// <summary>
/// The benchmarks' numeric arguments and settings, read one way: a value that is not a whole number in range fails with
/// one line naming the argument and the value found (int.Parse gave a FormatException and its stack trace, naming neither).
/// </summary>
public static class BenchArgs
{
    /// <summary>The value after <paramref name="name"/> in <paramref name="args"/>, or null.</summary>
    public static string? Value(string[] args, string name) => Array.IndexOf(args, name) is var i and >= 0 && i + 1 < args.Length ? args[i + 1] : null;

    /// <summary><paramref name="value"/> as a whole number of at least <paramref name="min"/>; <paramref name="name"/> says where it came from.</summary>
    public static int Int(string name, string value, int min = 1) =>
        int.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out int n) && n >= min ? n
            : throw new BenchUsageException($"{name} must be a whole number >= {min}, found '{value}'.");

    /// <summary>Torch threads from RETRIKT_BENCH_THREADS, or null when it is not set.</summary>
    public static int? Threads() => Environment.GetEnvironmentVariable("RETRIKT_BENCH_THREADS") is { } threads ? Int("RETRIKT_BENCH_THREADS", threads) : null;
}
