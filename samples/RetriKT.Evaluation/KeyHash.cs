using System.Security.Cryptography;
using System.Text;

namespace RetriKT.Evaluation;

/// <summary>
/// The harness's short keys: the first 16 lower-case hex digits of a text's UTF-8 SHA-256. Row config keys, encoder-baseline
/// keys, teacher and tiny-encoder recipe keys, row-claim file names and data keys are all written here, so their form cannot drift
/// apart (a key in results.jsonl or a cache folder name is only ever compared with one this method wrote).
/// </summary>
internal static class KeyHash
{
    public static string Of(string text) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text)))[..16];

    /// <summary>
    /// The key of files' contents: one line per file, "&lt;path under <paramref name="root"/>, with '/'&gt; &lt;bytes&gt;
    /// &lt;SHA-256&gt;", keyed by <see cref="Of"/>. Where the folder lies does not enter it, so a copy of the data keys the same.
    /// </summary>
    public static string OfFiles(string root, IEnumerable<string> paths) => Of(string.Join('\n', paths.Select(path =>
    {
        using var stream = File.OpenRead(path);
        return $"{Path.GetRelativePath(root, path).Replace('\\', '/')} {stream.Length} {Convert.ToHexStringLower(SHA256.HashData(stream))}";
    })));
}
