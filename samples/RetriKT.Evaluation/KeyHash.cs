using System.Security.Cryptography;
using System.Text;

namespace RetriKT.Evaluation;

/// <summary>
/// The harness's short keys: the first 16 lower-case hex digits of a text's UTF-8 SHA-256. Row config keys, encoder-baseline
/// keys, teacher and tiny-encoder recipe keys and row-claim file names are all written here, so their form cannot drift
/// apart (a key in results.jsonl or a cache folder name is only ever compared with one this method wrote).
/// </summary>
internal static class KeyHash
{
    public static string Of(string text) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text)))[..16];
}
