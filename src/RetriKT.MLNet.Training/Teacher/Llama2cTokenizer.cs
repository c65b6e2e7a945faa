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

    private Llama2cTokenizer(byte[][] pieces, float[] scores, int[]? types)
    {
        _pieces = pieces; _scores = scores;
        _lookup = new Dictionary<string, int>(StringComparer.Ordinal);
        Array.Fill(_byteIds, -1);
        for (int i = 0; i < pieces.Length; i++)
        {
            var text = Encoding.UTF8.GetString(pieces[i]);
            // SentencePiece types: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte. llama2.c files carry
            // no types: ids 0-2 are <unk>/BOS/EOS and 3-258 the byte pieces.
            int type = types?[i] ?? (i < 3 ? 3 : IsBytePiece(text) && i < 259 ? 6 : 1);
            if (type == 6 && IsBytePiece(text)) _byteIds[Convert.ToByte(text.Substring(3, 2), 16)] = i;
            else if (type is 1 or 4) _lookup.TryAdd(text, i);
        }
    }

    private static bool IsBytePiece(string s) => s.Length == 6 && s.StartsWith("<0x", StringComparison.Ordinal) && s[5] == '>';

    /// <summary>
    /// Reads the pieces of a SentencePiece <c>tokenizer.model</c> (protobuf ModelProto) when it is a BPE model; returns
    /// null for other model types (unigram), which Microsoft.ML.Tokenizers handles. "▁" becomes a space, as in llama2.c.
    /// </summary>
    public static Llama2cTokenizer? ReadSentencePieceBpe(string path)
    {
        var data = File.ReadAllBytes(path);
        var pieces = new List<byte[]>(); var scores = new List<float>(); var types = new List<int>();
        int modelType = 1;
        try
        {
            var reader = new ProtoReader(data, 0, data.Length);
            while (reader.Next(out int field, out int wire))
            {
                if (field == 1 && wire == 2)
                {
                    var (start, end) = reader.Bytes();
                    var sub = new ProtoReader(data, start, end);
                    string piece = ""; float score = 0; int type = 1;
                    while (sub.Next(out int f, out int w))
                    {
                        if (f == 1 && w == 2) { var (a, b) = sub.Bytes(); piece = Encoding.UTF8.GetString(data, a, b - a); }
                        else if (f == 2 && w == 5) score = sub.Fixed32Float();
                        else if (f == 3 && w == 0) type = (int)sub.Varint();
                        else sub.Skip(w);
                    }
                    pieces.Add(Encoding.UTF8.GetBytes(piece.Replace('\u2581', ' '))); scores.Add(score); types.Add(type);
                }
                else if (field == 2 && wire == 2)
                {
                    var (start, end) = reader.Bytes();
                    var sub = new ProtoReader(data, start, end);
                    while (sub.Next(out int f, out int w)) { if (f == 3 && w == 0) modelType = (int)sub.Varint(); else sub.Skip(w); }
                }
                else reader.Skip(wire);
            }
        }
        catch (IndexOutOfRangeException e) { throw new InvalidDataException($"{path}: truncated or corrupt SentencePiece model.", e); }
        if (pieces.Count == 0) throw new InvalidDataException($"{path}: no pieces found; not a SentencePiece model.");
        return modelType == 2 ? new Llama2cTokenizer(pieces.ToArray(), scores.ToArray(), types.ToArray()) : null;
    }

    private ref struct ProtoReader(byte[] data, int position, int end)
    {
        private int _pos = position;

        public bool Next(out int field, out int wire)
        {
            field = wire = 0;
            if (_pos >= end) return false;
            ulong tag = Varint();
            field = (int)(tag >> 3); wire = (int)(tag & 7);
            return true;
        }

        public ulong Varint()
        {
            ulong result = 0; int shift = 0;
            while (true)
            {
                byte b = data[_pos++];
                result |= (ulong)(b & 0x7F) << shift;
                if (b < 0x80) return result;
                shift += 7;
                if (shift > 63) throw new InvalidDataException("Malformed varint in SentencePiece model.");
            }
        }

        public (int Start, int End) Bytes()
        {
            int len = (int)Varint();
            if (len < 0 || _pos + len > end) throw new IndexOutOfRangeException();
            var r = (_pos, _pos + len);
            _pos += len;
            return r;
        }

        public float Fixed32Float() { float f = BinaryPrimitives.ReadSingleLittleEndian(data.AsSpan(_pos, 4)); _pos += 4; return f; }

        public void Skip(int wire)
        {
            switch (wire)
            {
                case 0: Varint(); break;
                case 1: _pos += 8; break;
                case 2: Bytes(); break;
                case 5: _pos += 4; break;
                default: throw new InvalidDataException($"Unsupported protobuf wire type {wire} in SentencePiece model.");
            }
        }
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
        return new Llama2cTokenizer(pieces.ToArray(), scores.ToArray(), null);
    }

    /// <summary>
    /// Encodes <paramref name="text"/>. <paramref name="dummyPrefix"/>: put SentencePiece's dummy-prefix space in front, as
    /// for the start of a text (run.c always does); false encodes a text that continues other text, where a leading
    /// space is the text's own (" great" is "▁great", not "▁" + "▁great").
    /// </summary>
    public List<int> Encode(string text, bool addBos, bool dummyPrefix = true)
    {
        var ids = new List<int>(text.Length + 2);
        if (addBos) ids.Add(BosId);
        if (text.Length == 0) return ids;
        var tokens = new List<int>(text.Length + 1);
        if (dummyPrefix && _lookup.TryGetValue(" ", out var space)) tokens.Add(space);
        var bytes = new byte[4];
        for (int i = 0; i < text.Length;)
        {
            int len = char.IsSurrogatePair(text, i) ? 2 : 1;
            var ch = text.Substring(i, len);
            i += len;
            if (_lookup.TryGetValue(ch, out var id)) { tokens.Add(id); continue; }
            int n = Encoding.UTF8.GetBytes(ch, bytes);
            for (int b = 0; b < n; b++)
                tokens.Add(_byteIds[bytes[b]] >= 0 ? _byteIds[bytes[b]] : 0); // no byte piece: <unk>
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

    /// <summary>Whether <paramref name="id"/>'s piece starts with a space ("▁"), which <see cref="Decode"/> drops at the start of a text.</summary>
    public bool StartsWithSpace(int id) => id >= 0 && id < _pieces.Length && id != BosId && id != EosId && _pieces[id].Length > 0 && _pieces[id][0] == (byte)' ';

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
            if (piece.Length == 6 && piece[0] == '<' && piece[1] == '0' && piece[2] == 'x' && _byteIds.Contains(id))
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
