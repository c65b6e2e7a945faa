using System.Buffers.Binary;
using System.Text;

namespace RetriKT.MLNet.Teacher;

/// <summary>
/// Reader and encoder for llama2.c's tokenizer export (<c>tokenizer.bin</c>, <c>tok512.bin</c>): int32 max_token_length,
/// then per id a float32 score, an int32 byte length and the raw bytes. Encoding is SentencePiece-BPE by score, exactly
/// as llama2.c <c>run.c</c>: a dummy-prefix space, code points looked up as pieces (unknown ones fall back to
/// <c>&lt;0xXX&gt;</c> byte tokens, id = byte + 3), then repeatedly merge the adjacent pair with the highest-scoring
/// concatenation (leftmost on ties). Microsoft.ML.Tokenizers has no reader for this format, hence this class.
/// </summary>
internal sealed class Llama2cTokenizer
{
    private readonly byte[][] _pieces;
    private readonly float[] _scores;
    private readonly Dictionary<string, int> _lookup;
    private readonly int[] _byteIds = new int[256];

    private Llama2cTokenizer(byte[][] pieces, float[] scores)
    {
        _pieces = pieces; _scores = scores;
        _lookup = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < pieces.Length; i++) _lookup.TryAdd(Encoding.UTF8.GetString(pieces[i]), i);
        for (int b = 0; b < 256; b++)
            _byteIds[b] = _lookup.TryGetValue($"<0x{b:X2}>", out var id) ? id : -1;
    }

    public int VocabSize => _pieces.Length;
    public const int BosId = 1, EosId = 2;

    public static Llama2cTokenizer Read(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"llama2.c tokenizer not found: {path}", path);
        var data = File.ReadAllBytes(path);
        if (data.Length < 4) throw new InvalidDataException($"{path}: truncated llama2.c tokenizer ({data.Length} bytes).");
        int maxLen = BinaryPrimitives.ReadInt32LittleEndian(data);
        if (maxLen <= 0 || maxLen > 1024) throw new InvalidDataException($"{path}: max_token_length {maxLen} is implausible; not a llama2.c tokenizer.");
        var pieces = new List<byte[]>(); var scores = new List<float>();
        int pos = 4;
        while (pos < data.Length)
        {
            if (pos + 8 > data.Length)
                throw new InvalidDataException($"{path}: truncated at token {pieces.Count} (byte {pos} of {data.Length}: header needs 8 bytes).");
            float score = BinaryPrimitives.ReadSingleLittleEndian(data.AsSpan(pos));
            int len = BinaryPrimitives.ReadInt32LittleEndian(data.AsSpan(pos + 4));
            pos += 8;
            if (len < 0 || len > maxLen || pos + len > data.Length)
                throw new InvalidDataException($"{path}: token {pieces.Count} has length {len} (max {maxLen}, {data.Length - pos} bytes left); the file is truncated or corrupt.");
            pieces.Add(data.AsSpan(pos, len).ToArray()); scores.Add(score);
            pos += len;
        }
        if (pieces.Count < 259) throw new InvalidDataException($"{path}: only {pieces.Count} tokens; a llama2.c tokenizer has at least 259 (specials + 256 bytes).");
        return new Llama2cTokenizer(pieces.ToArray(), scores.ToArray());
    }

    public List<int> Encode(string text, bool addBos)
    {
        var ids = new List<int>(text.Length + 2);
        if (addBos) ids.Add(BosId);
        if (text.Length == 0) return ids;
        var tokens = new List<int>(text.Length + 1);
        if (_lookup.TryGetValue(" ", out var space)) tokens.Add(space);
        var bytes = new byte[4];
        for (int i = 0; i < text.Length;)
        {
            int len = char.IsSurrogatePair(text, i) ? 2 : 1;
            var ch = text.Substring(i, len);
            i += len;
            if (_lookup.TryGetValue(ch, out var id)) { tokens.Add(id); continue; }
            int n = Encoding.UTF8.GetBytes(ch, bytes);
            for (int b = 0; b < n; b++)
                tokens.Add(_byteIds[bytes[b]] >= 0 ? _byteIds[bytes[b]] : 0);
        }
        while (true)
        {
            float best = float.NegativeInfinity; int bestId = -1, bestIndex = -1;
            for (int i = 0; i + 1 < tokens.Count; i++)
            {
                var merged = Concat(_pieces[tokens[i]], _pieces[tokens[i + 1]]);
                if (_lookup.TryGetValue(merged, out var id) && _scores[id] > best) { best = _scores[id]; bestId = id; bestIndex = i; }
            }
            if (bestIndex < 0) break;
            tokens[bestIndex] = bestId;
            tokens.RemoveAt(bestIndex + 1);
        }
        ids.AddRange(tokens);
        return ids;
    }

    private static string Concat(byte[] a, byte[] b)
    {
        Span<byte> buffer = stackalloc byte[a.Length + b.Length];
        a.CopyTo(buffer); b.CopyTo(buffer[a.Length..]);
        return Encoding.UTF8.GetString(buffer);
    }

    /// <summary>Decodes like run.c: BOS/EOS dropped, the first piece loses its dummy-prefix space, byte pieces become raw bytes.</summary>
    public string Decode(IEnumerable<int> ids)
    {
        var bytes = new List<byte>();
        bool first = true;
        foreach (int id in ids)
        {
            if (id is BosId or EosId) { if (id == BosId) first = true; continue; }
            if (id < 0 || id >= _pieces.Length) throw new ArgumentOutOfRangeException(nameof(ids), $"Token id {id} is outside the vocabulary [0, {_pieces.Length}).");
            var piece = _pieces[id];
            if (id >= 3 && id < 3 + 256 && piece.Length == 6 && piece[0] == '<' && piece[1] == '0' && piece[2] == 'x')
            {
                bytes.Add(Convert.ToByte(Encoding.ASCII.GetString(piece, 3, 2), 16));
            }
            else
            {
                int skip = first && piece.Length > 0 && piece[0] == (byte)' ' ? 1 : 0;
                for (int i = skip; i < piece.Length; i++) bytes.Add(piece[i]);
            }
            first = false;
        }
        return Encoding.UTF8.GetString(bytes.ToArray());
    }
}
