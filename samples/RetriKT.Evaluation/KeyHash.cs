using System.Security.Cryptography;
using System.Text;

namespace RetriKT.Evaluation;

/// <summary>
/// The harness's short keys: the first 16 lower-case hex digits of a text's UTF-8 SHA-256. Row config keys, teacher and
/// tiny-encoder recipe keys and row-claim file names all take this one form, so a key written by one reads as the others.
/// </summary>
internal static class KeyHash
{
    public static string Of(string text) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text)))[..16];
}
