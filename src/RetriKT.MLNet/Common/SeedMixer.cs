using System.Security.Cryptography;
using System.Text;

namespace RetriKT.MLNet.Common;

/// <summary>
/// The one way RetriKT derives a seed for a sub-task (a step, a batch, a label) from a component's seed: a hash of the
/// seed, a purpose name and the indices, so that two purposes never share a random stream by accident and a run that
/// resumes at step k draws exactly what an uninterrupted run drew at step k.
/// </summary>
public static class SeedMixer
{
    /// <summary>A non-negative 63-bit seed for <paramref name="purpose"/> and <paramref name="indices"/> under <paramref name="seed"/>.</summary>
    public static long Derive(long seed, string purpose, params long[] indices)
    {
        ArgumentNullException.ThrowIfNull(purpose);
        Span<byte> buffer = stackalloc byte[8];
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        BitConverter.TryWriteBytes(buffer, seed);
        hash.AppendData(buffer);
        hash.AppendData(Encoding.UTF8.GetBytes(purpose));
        foreach (var index in indices)
        {
            BitConverter.TryWriteBytes(buffer, index);
            hash.AppendData(buffer);
        }
        Span<byte> digest = stackalloc byte[32];
        hash.GetHashAndReset(digest);
        return BitConverter.ToInt64(digest) & long.MaxValue;
    }

    /// <summary>A <see cref="System.Random"/> seeded with <see cref="Derive"/>'s seed (its low 31 bits).</summary>
    public static Random Random(long seed, string purpose, params long[] indices) => new((int)(Derive(seed, purpose, indices) & int.MaxValue));
}
